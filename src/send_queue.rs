//! The send queue: bytes accepted by `write` that the socket has not taken yet.
//!
//! A [`SendQueue`] is a queue of chunks handed to the socket as one vectored write
//! ([`SendQueue::fill_io_slices`]) and trimmed by however many bytes the socket took
//! ([`SendQueue::consume`]). Five choices shape it:
//!
//! * **Zero copy for `Bytes`.** [`SendQueue::push_bytes`] queues the caller's [`Bytes`]
//!   as is (a refcount, no copy), so large payloads go from the protocol to `writev`
//!   untouched. Only tiny ones are copied, and only into spare room that already exists,
//!   because a copy of a few hundred bytes is cheaper than an extra iovec per syscall.
//! * **Coalescing for copies.** [`SendQueue::push_slice`] must copy anyway, so it appends
//!   to the tail buffer while that stays small: a protocol writing many little frames
//!   then costs one iovec instead of hundreds, and `IOV_MAX` is rarely the limit.
//! * **The first chunk inline.** The usual queue is one refused write waiting for the
//!   socket to become writable. Its chunk lives in the queue itself; only a second chunk
//!   needs a deque, so the common case never trades a deque with the pool.
//! * **A caller-owned pool.** Buffers and deques of drained queues go to a [`SendPool`]
//!   (owned by whoever owns many queues, e.g. the loop registry), and new writes take
//!   them back, so a transport in steady state performs no allocator calls at all.
//! * **An idle queue holds no heap.** The moment a queue drains, its deque and buffers
//!   return to the pool. A server with many idle connections therefore pays only for
//!   the pool (a few buffers in total), not for one buffer per connection.
//!
//! Two CPython bugs are designed out: a zero-length chunk is never queued (a zero-length
//! iovec that never drains, gh-155888), and a partially sent chunk keeps its unsent tail
//! at the head of the queue (gh-146507).

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::mem;

use bytes::{Buf, Bytes};

/// `push_bytes` copies a chunk this small into the tail's spare capacity: below this, one
/// memcpy is cheaper than one more iovec (and one more refcount to drop later).
const COPY_BYTES_MAX: usize = 512;

/// `push_slice` grows the tail buffer (even by reallocating) while its live bytes stay
/// within this; beyond it, a fresh chunk avoids re-copying an already large buffer.
const COALESCE_MAX: usize = 16 * 1024;

/// A fresh owned buffer gets at least this capacity, so the small writes that follow it
/// coalesce without reallocating and the pooled buffer suits most later writes.
const MIN_BUFFER_CAPACITY: usize = 4 * 1024;

/// Buffers (and deques, by their byte size) larger than this are freed instead of pooled,
/// so one burst of huge writes does not pin that memory for the life of the pool.
const POOL_CAPACITY_MAX: usize = 1024 * 1024;

/// The chunks after a queue's first. Boxed: a queue without them then costs one pointer,
/// which keeps the inline first chunk within a transport's size budget (DESIGN.md §8).
type Rest = Box<VecDeque<Chunk>>;

/// A reusable buffer handed between drained queues and new writes, so an idle transport
/// holds no heap memory and the next message costs no allocation.
///
/// It keeps at most `max_buffers` cleared byte buffers and at most `max_buffers` empty
/// chunk deques, each with its capacity intact. One pool serves many queues; it is owned
/// by the caller and passed to every queue operation that may take or return memory.
pub struct SendPool {
    buffers: Vec<Vec<u8>>,
    deques: Vec<Rest>,
    max_buffers: usize,
}

impl SendPool {
    /// An empty pool that keeps at most `max_buffers` buffers of each kind.
    pub fn new(max_buffers: usize) -> Self {
        SendPool { buffers: Vec::new(), deques: Vec::new(), max_buffers }
    }

    /// Heap bytes held by the pool: pooled buffers and deques plus its own bookkeeping.
    ///
    /// Together with [`SendQueue::heap_bytes`] of every queue this accounts for all the
    /// memory the send path holds.
    pub fn heap_bytes(&self) -> usize {
        let buffers: usize = self.buffers.iter().map(Vec::capacity).sum();
        let deques: usize = self.deques.iter().map(|rest| rest_heap_bytes(rest)).sum();
        buffers
            + deques
            + self.buffers.capacity() * mem::size_of::<Vec<u8>>()
            + self.deques.capacity() * mem::size_of::<Rest>()
    }

    /// An empty buffer with capacity for at least `need` bytes.
    fn take_buffer(&mut self, need: usize) -> Vec<u8> {
        // Best fit keeps the big buffers for the big writes that need them.
        let fit = (0..self.buffers.len())
            .filter(|&i| self.buffers[i].capacity() >= need)
            .min_by_key(|&i| self.buffers[i].capacity());
        if let Some(i) = fit {
            return self.buffers.swap_remove(i);
        }
        let want = need.max(MIN_BUFFER_CAPACITY);
        // Growing the largest pooled buffer costs one reallocation, like a fresh buffer
        // would, but stops undersized buffers from lingering in the pool.
        let largest = (0..self.buffers.len()).max_by_key(|&i| self.buffers[i].capacity());
        match largest {
            Some(i) => {
                let mut buf = self.buffers.swap_remove(i);
                buf.reserve_exact(want);
                buf
            }
            None => Vec::with_capacity(want),
        }
    }

    /// Takes back a buffer whose bytes were all sent.
    fn put_buffer(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && cap <= POOL_CAPACITY_MAX && self.buffers.len() < self.max_buffers {
            buf.clear();
            self.buffers.push(buf);
        }
    }

    /// An empty deque, with capacity if the pool had one.
    fn take_deque(&mut self) -> Rest {
        self.deques.pop().unwrap_or_default()
    }

    /// Takes back the deque of a queue that just drained.
    fn put_deque(&mut self, deque: Rest) {
        debug_assert!(deque.is_empty());
        if deque.capacity() > 0
            && rest_heap_bytes(&deque) <= POOL_CAPACITY_MAX
            && self.deques.len() < self.max_buffers
        {
            self.deques.push(deque);
        }
    }
}

impl Default for SendPool {
    fn default() -> Self {
        SendPool::new(16)
    }
}

impl fmt::Debug for SendPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPool")
            .field("buffers", &self.buffers.len())
            .field("deques", &self.deques.len())
            .field("max_buffers", &self.max_buffers)
            .finish()
    }
}

/// Heap bytes of a boxed deque: the box and the deque's buffer.
fn rest_heap_bytes(rest: &VecDeque<Chunk>) -> usize {
    mem::size_of::<VecDeque<Chunk>>() + rest.capacity() * mem::size_of::<Chunk>()
}

/// One queued chunk.
enum Chunk {
    Shared(Bytes),
    Owned { buf: Vec<u8>, start: usize },
}

impl Chunk {
    /// The bytes not sent yet; never empty while queued.
    fn live(&self) -> &[u8] {
        match self {
            Chunk::Shared(bytes) => bytes,
            Chunk::Owned { buf, start } => &buf[*start..],
        }
    }

    /// Drops the first `n` live bytes, `n` < live length, without allocating.
    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Shared(bytes) => bytes.advance(n),
            Chunk::Owned { start, .. } => *start += n,
        }
    }
}

/// Queued outbound bytes.
///
/// Chunks are either the caller's [`Bytes`] (zero copy) or buffers owned by the queue
/// (copies, coalesced). Every operation that may need or free memory takes the caller's
/// [`SendPool`]; an empty queue holds no heap memory.
pub struct SendQueue {
    /// The oldest chunk; `None` exactly when the queue is empty.
    head: Option<Chunk>,
    /// The chunks after `head`, oldest first. Taken from the pool for a second chunk and
    /// kept, even when emptied, until the queue drains: a queue that hovers around two
    /// chunks then does not trade its deque with the pool on every write.
    rest: Option<Rest>,
    len: usize,
}

impl SendQueue {
    /// An empty queue; holds no heap memory.
    pub const fn new() -> Self {
        SendQueue { head: None, rest: None, len: 0 }
    }

    /// Total queued bytes, O(1).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queued chunks, O(1): how many slices [`fill_io_slices`](Self::fill_io_slices)
    /// fills when given room for all of them.
    #[inline]
    pub fn chunk_count(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    /// Queues `data` without copying (small chunks may be coalesced into the tail).
    ///
    /// A chunk of at most 512 bytes is copied into the tail buffer when that has the
    /// spare capacity already; anything else is queued as the `Bytes` itself. Empty
    /// `data` is ignored.
    pub fn push_bytes(&mut self, data: Bytes, pool: &mut SendPool) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        // The usual case (a refused write), built in place rather than through
        // `push_chunk`: moving the chunk through that call's argument stalls on store
        // forwarding, a few ns per queued write.
        if self.head.is_none() {
            self.head = Some(Chunk::Shared(data));
            return;
        }
        if data.len() <= COPY_BYTES_MAX
            && let Some(Chunk::Owned { buf, .. }) = self.tail_mut()
            && buf.capacity() - buf.len() >= data.len()
        {
            buf.extend_from_slice(&data);
            return;
        }
        self.push_chunk(Chunk::Shared(data), pool);
    }

    /// Queues a copy of `data`.
    ///
    /// The copy goes into the tail buffer when it fits that buffer's capacity, or when
    /// the tail stays small (16 KiB of unsent bytes) even after growing; otherwise into a
    /// new buffer, taken from `pool` when it has one. Empty `data` is ignored.
    pub fn push_slice(&mut self, data: &[u8], pool: &mut SendPool) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Owned { buf, start }) = self.tail_mut() {
            if buf.capacity() - buf.len() >= data.len() {
                buf.extend_from_slice(data);
                return;
            }
            let live = buf.len() - *start;
            if live + data.len() <= COALESCE_MAX {
                if live + data.len() <= buf.capacity() {
                    // The tail is also a partly sent head: reclaim the sent prefix
                    // instead of reallocating.
                    buf.drain(..*start);
                    *start = 0;
                }
                buf.extend_from_slice(data);
                return;
            }
        }
        let mut buf = pool.take_buffer(data.len());
        buf.extend_from_slice(data);
        self.push_chunk(Chunk::Owned { buf, start: 0 }, pool);
    }

    /// Fills `out` with the queued chunks in order; returns how many slices were filled.
    ///
    /// Each slice is the unsent part of one chunk and is never empty. At most
    /// `out.len()` slices are filled, so the caller's array (sized to its `IOV_MAX`)
    /// is the only limit; nothing is allocated.
    pub fn fill_io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in out.iter_mut().zip(self.chunks()) {
            *slot = IoSlice::new(chunk.live());
            filled += 1;
        }
        filled
    }

    /// Removes the first `n` bytes; `n <= len()` (checked by the caller).
    ///
    /// Fully sent chunks are dropped (owned buffers go back to `pool`); a partly sent
    /// chunk stays at the head with only its unsent tail. When the queue drains, its
    /// deque goes to `pool` too, so it holds no heap memory.
    pub fn consume(&mut self, n: usize, pool: &mut SendPool) {
        debug_assert!(n <= self.len, "consume({n}) with only {} queued", self.len);
        // Clamped so a caller bug in release builds cannot desync `len` from the chunks.
        let mut left = n.min(self.len);
        self.len -= left;
        while left > 0 {
            let Some(head) = &mut self.head else {
                break;
            };
            let live = head.live().len();
            if left < live {
                head.advance(left);
                break;
            }
            left -= live;
            self.drop_head(pool);
        }
        if self.len == 0 {
            self.release_deque(pool);
        }
    }

    /// Drops everything queued, returning buffers to the pool.
    ///
    /// Afterwards the queue holds no heap memory.
    pub fn clear(&mut self, pool: &mut SendPool) {
        while self.head.is_some() {
            self.drop_head(pool);
        }
        self.len = 0;
        self.release_deque(pool);
    }

    /// Heap bytes held by this queue (capacity of its buffers), for memory accounting.
    ///
    /// Counts the deque's capacity and every owned buffer's capacity, O(chunks). Shared
    /// `Bytes` are not counted: their memory belongs to whoever created them.
    pub fn heap_bytes(&self) -> usize {
        let owned: usize = self
            .chunks()
            .map(|chunk| match chunk {
                Chunk::Shared(_) => 0,
                Chunk::Owned { buf, .. } => buf.capacity(),
            })
            .sum();
        self.rest.as_deref().map_or(0, rest_heap_bytes) + owned
    }

    /// The chunks, oldest first.
    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        // Chaining an empty deque rather than flattening the `Option` keeps the iterator
        // simple enough to compile to a plain loop in `fill_io_slices`.
        static NO_CHUNKS: VecDeque<Chunk> = VecDeque::new();
        self.head.iter().chain(self.rest.as_deref().unwrap_or(&NO_CHUNKS))
    }

    /// The newest chunk, the one later writes may coalesce into.
    fn tail_mut(&mut self) -> Option<&mut Chunk> {
        match self.rest.as_deref_mut().and_then(VecDeque::back_mut) {
            Some(tail) => Some(tail),
            None => self.head.as_mut(),
        }
    }

    /// Appends a non-empty chunk; `len` is the caller's to update.
    #[inline]
    fn push_chunk(&mut self, chunk: Chunk, pool: &mut SendPool) {
        if self.head.is_none() {
            self.head = Some(chunk);
        } else {
            self.rest.get_or_insert_with(|| pool.take_deque()).push_back(chunk);
        }
    }

    /// Drops the head chunk (its buffer goes to `pool`) and moves the next one up.
    #[inline]
    fn drop_head(&mut self, pool: &mut SendPool) {
        let next = self.rest.as_deref_mut().and_then(VecDeque::pop_front);
        if let Some(Chunk::Owned { buf, .. }) = mem::replace(&mut self.head, next) {
            pool.put_buffer(buf);
        }
    }

    /// Hands the (empty) deque to the pool so the idle queue holds no heap.
    #[inline]
    fn release_deque(&mut self, pool: &mut SendPool) {
        if let Some(rest) = self.rest.take() {
            pool.put_deque(rest);
        }
    }
}

impl Default for SendQueue {
    fn default() -> Self {
        SendQueue::new()
    }
}

impl fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendQueue")
            .field("len", &self.len)
            .field("chunks", &self.chunk_count())
            .finish()
    }
}

#[cfg(test)]
mod tests;

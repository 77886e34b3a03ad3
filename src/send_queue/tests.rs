//! Send queue unit tests: order, coalescing, partial consumes, the pool, and a randomized
//! comparison with a plain `Vec<u8>`.

use super::*;

/// The bytes `fill_io_slices` exposes with an array of `iov` slots.
fn exposed(q: &SendQueue, iov: usize) -> Vec<u8> {
    let mut slots = vec![IoSlice::new(&[]); iov];
    let n = q.fill_io_slices(&mut slots);
    assert!(slots[..n].iter().all(|s| !s.is_empty()), "empty iovec queued");
    slots[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

fn slice_count(q: &SendQueue) -> usize {
    q.fill_io_slices(&mut [IoSlice::new(&[]); 64])
}

#[test]
fn order_preserved_across_shared_and_owned() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    q.push_slice(b"ab", &mut pool);
    q.push_bytes(Bytes::from(vec![b'c'; 600]), &mut pool);
    q.push_slice(b"de", &mut pool);
    q.push_bytes(Bytes::from_static(b"fg"), &mut pool);
    let mut want = b"ab".to_vec();
    want.extend([b'c'; 600]);
    want.extend(b"defg");
    assert_eq!(q.len(), want.len());
    assert_eq!(exposed(&q, 64), want);
    // "fg" was small and fit the spare room of the "de" buffer.
    assert_eq!(slice_count(&q), 3);
}

#[test]
fn coalescing_reduces_slice_count() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    for i in 0..100u8 {
        q.push_slice(&[i; 100], &mut pool);
    }
    // 10_000 bytes stay under the coalescing limit: a single buffer.
    assert_eq!(slice_count(&q), 1);
    assert_eq!(q.len(), 10_000);
    // A large Bytes is never copied, even with spare room in the tail.
    q.push_bytes(Bytes::from(vec![0; COPY_BYTES_MAX + 1]), &mut pool);
    assert_eq!(slice_count(&q), 2);
    // Past the limit, a copy starts a new chunk instead of growing the tail.
    q.push_slice(&vec![1; COALESCE_MAX], &mut pool);
    q.push_slice(&vec![2; COALESCE_MAX], &mut pool);
    assert_eq!(slice_count(&q), 4);
}

#[test]
fn partial_consume_keeps_unsent_tail() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    q.push_bytes(Bytes::from_static(b"hello world"), &mut pool);
    q.push_slice(b"!!", &mut pool);
    q.consume(6, &mut pool);
    assert_eq!(q.len(), 7);
    assert_eq!(exposed(&q, 8), b"world!!");
    q.consume(4, &mut pool);
    assert_eq!(exposed(&q, 8), b"d!!");
    q.consume(2, &mut pool);
    assert_eq!(exposed(&q, 8), b"!");
}

#[test]
fn consume_across_chunk_boundaries() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    for part in [&b"aaaa"[..], b"bbbb", b"cccc"] {
        q.push_bytes(Bytes::copy_from_slice(part), &mut pool);
    }
    assert_eq!(slice_count(&q), 3);
    q.consume(9, &mut pool);
    assert_eq!(slice_count(&q), 1);
    assert_eq!(exposed(&q, 8), b"ccc");
    q.consume(3, &mut pool);
    assert!(q.is_empty());
    assert_eq!(slice_count(&q), 0);
}

#[test]
fn empty_pushes_are_ignored() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    q.push_slice(b"", &mut pool);
    q.push_bytes(Bytes::new(), &mut pool);
    assert!(q.is_empty());
    assert_eq!(slice_count(&q), 0);
    assert_eq!(q.heap_bytes(), 0);
    q.push_bytes(Bytes::from_static(b"x"), &mut pool);
    q.push_bytes(Bytes::new(), &mut pool);
    q.push_slice(b"", &mut pool);
    assert_eq!(slice_count(&q), 1);
}

#[test]
fn drained_queue_holds_no_heap_and_reuses_pool() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    q.push_slice(&[7; 100], &mut pool);
    q.push_bytes(Bytes::from(vec![8; 4000]), &mut pool);
    q.push_slice(&[9; 5000], &mut pool);
    assert!(q.heap_bytes() >= MIN_BUFFER_CAPACITY + 5000);
    q.consume(q.len(), &mut pool);
    assert_eq!(q.heap_bytes(), 0);
    assert_eq!((pool.buffers.len(), pool.deques.len()), (2, 1));
    let pooled = pool.heap_bytes();

    // The next writes take memory back from the pool instead of allocating: a buffer
    // for the copy, and the deque only once a second chunk is queued.
    q.push_slice(&[1; 3000], &mut pool);
    assert_eq!((pool.buffers.len(), pool.deques.len()), (1, 1));
    q.push_bytes(Bytes::from(vec![2; 4000]), &mut pool);
    assert_eq!((pool.buffers.len(), pool.deques.len()), (1, 0));
    assert!(pool.heap_bytes() < pooled);
    q.clear(&mut pool);
    assert!(q.is_empty());
    assert_eq!(q.heap_bytes(), 0);
    assert_eq!((pool.buffers.len(), pool.deques.len()), (2, 1));
}

#[test]
fn pool_cap_honoured() {
    let mut pool = SendPool::new(2);
    let mut queues: Vec<SendQueue> = (0..4).map(|_| SendQueue::new()).collect();
    for q in &mut queues {
        q.push_slice(&[0; 10], &mut pool);
        q.push_bytes(Bytes::from(vec![0; 1000]), &mut pool);
        q.push_slice(&[0; 20_000], &mut pool);
    }
    for q in &mut queues {
        q.clear(&mut pool);
    }
    assert_eq!((pool.buffers.len(), pool.deques.len()), (2, 2));

    let mut pool = SendPool::new(4);
    let mut q = SendQueue::new();
    q.push_slice(&vec![0; POOL_CAPACITY_MAX + 1], &mut pool);
    q.consume(q.len(), &mut pool);
    assert!(pool.buffers.is_empty(), "oversized buffer was pooled");
    assert!(pool.deques.is_empty(), "a lone chunk took a deque");

    let mut pool = SendPool::new(0);
    q.push_slice(b"x", &mut pool);
    q.clear(&mut pool);
    assert_eq!(pool.heap_bytes(), 0);
}

#[test]
fn lone_chunk_stays_inline() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    // One refused write: queued inside the queue, no heap, the pool untouched.
    q.push_bytes(Bytes::from(vec![1; 1000]), &mut pool);
    assert_eq!((q.chunk_count(), q.heap_bytes(), pool.heap_bytes()), (1, 0, 0));
    // A second chunk takes a deque, kept while the queue is down to one chunk...
    q.push_bytes(Bytes::from(vec![2; 1000]), &mut pool);
    let with_deque = q.heap_bytes();
    assert!(with_deque > 0);
    q.consume(1000, &mut pool);
    assert_eq!((q.chunk_count(), q.heap_bytes()), (1, with_deque));
    assert_eq!(exposed(&q, 4), [2; 1000]);
    // ...and returned once it drains.
    q.consume(1000, &mut pool);
    assert_eq!((q.chunk_count(), q.heap_bytes()), (0, 0));
    assert_eq!(pool.deques.len(), 1);
}

#[test]
fn partly_sent_head_is_reclaimed_before_growing() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    q.push_slice(&[1; 3000], &mut pool);
    q.consume(2000, &mut pool);
    let buffer = q.heap_bytes();
    assert_eq!(buffer, MIN_BUFFER_CAPACITY);
    // No room after the 3000 bytes, but the 1000 unsent ones plus these fit the
    // buffer once the sent prefix is dropped: same chunk, same buffer.
    q.push_slice(&[2; MIN_BUFFER_CAPACITY - 1000], &mut pool);
    assert_eq!((q.chunk_count(), q.heap_bytes()), (1, buffer));
    let mut want = vec![1; 1000];
    want.extend([2; MIN_BUFFER_CAPACITY - 1000]);
    assert_eq!(exposed(&q, 4), want);
}

#[test]
fn one_slice_array_still_makes_progress() {
    let mut pool = SendPool::default();
    let mut q = SendQueue::new();
    let mut want: Vec<u8> = Vec::new();
    for i in 0..5u8 {
        let part = vec![i; 700];
        want.extend(&part);
        q.push_bytes(Bytes::from(part), &mut pool);
    }
    let mut got: Vec<u8> = Vec::new();
    while !q.is_empty() {
        let first = exposed(&q, 1);
        assert!(!first.is_empty());
        // The socket takes at most 300 bytes at a time.
        let n = first.len().min(300);
        got.extend(&first[..n]);
        q.consume(n, &mut pool);
    }
    assert_eq!(got, want);
    assert_eq!(q.heap_bytes(), 0);
}

#[test]
fn randomized_against_vec_model() {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let shared = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
    let mut pool = SendPool::new(4);
    let mut q = SendQueue::new();
    let mut model: Vec<u8> = Vec::new();
    for step in 0..20_000 {
        // Mostly small writes, sometimes big ones crossing every threshold.
        let size = match next(10) {
            0 => next(70_000),
            1..=3 => next(COPY_BYTES_MAX * 2),
            _ => next(64),
        };
        match next(8) {
            0..=1 => {
                let at = next(shared.len() - size + 1);
                let data = shared.slice(at..at + size);
                model.extend_from_slice(&data);
                q.push_bytes(data, &mut pool);
            }
            2..=3 => {
                let data: Vec<u8> = (0..size).map(|i| (step + i) as u8).collect();
                model.extend_from_slice(&data);
                q.push_slice(&data, &mut pool);
            }
            4 if next(50) == 0 => {
                q.clear(&mut pool);
                model.clear();
            }
            _ => {
                let seen = exposed(&q, 1 + next(8));
                assert_eq!(seen[..], model[..seen.len()], "step {step}");
                assert_eq!(seen.is_empty(), model.is_empty());
                let n = if next(4) == 0 { seen.len() } else { next(seen.len() + 1) };
                q.consume(n, &mut pool);
                model.drain(..n);
            }
        }
        assert_eq!(q.len(), model.len(), "step {step}");
        let mut all = vec![IoSlice::new(&[]); q.chunk_count() + 1];
        assert_eq!(q.fill_io_slices(&mut all), q.chunk_count(), "step {step}");
        if q.is_empty() {
            assert_eq!(q.heap_bytes(), 0, "step {step}");
        }
    }
    assert_eq!(exposed(&q, 1 << 16), model);
}

//! Which server accepted which connection: what `wait_closed`, `close_clients`,
//! `abort_clients` and the max-connections limit need.
//!
//! Kept in the socket table ([`Sockets`](crate::sockets::Sockets)) because a connection
//! ends there: the core closes it through `Io::close`, and removing the socket removes the
//! membership, so a server below its limit again is noticed at once.

use std::collections::{HashMap, HashSet};

use aioport::Handle;

use crate::ServerId;

/// The accepted connections of one server.
#[derive(Debug, Default)]
struct Members {
    open: HashSet<Handle>,
    max: Option<usize>,
    /// Accepting stopped at the limit; resumes once a connection ends.
    paused: bool,
    /// The server was closed: the entry goes with its last connection.
    closed: bool,
}

/// Connection ↔ server membership for every server of a loop.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    owner: HashMap<Handle, ServerId>,
    servers: HashMap<ServerId, Members>,
    /// Servers that dropped below their limit while paused: their listeners are queued for
    /// accepting by the next iteration.
    pub(crate) resume: Vec<ServerId>,
}

impl Clients {
    fn members(&mut self, id: ServerId) -> &mut Members {
        self.servers.entry(id).or_default()
    }

    /// A new server with its connection limit.
    pub(crate) fn add_server(&mut self, id: ServerId, max: Option<usize>) {
        self.members(id).max = max;
    }

    /// Server `id` was closed: its entry is freed now if it has no connection left,
    /// otherwise with its last one (`wait_closed` and `close_clients` still need them).
    pub(crate) fn close_server(&mut self, id: ServerId) {
        let m = self.members(id);
        m.closed = true;
        if m.open.is_empty() {
            self.servers.remove(&id);
        }
    }

    /// How many servers have an entry (open ones, and closed ones with connections).
    #[cfg(test)]
    pub(crate) fn servers(&self) -> usize {
        self.servers.len()
    }

    /// True if `id` may accept one more connection; otherwise it is marked paused (the
    /// caller stops accepting).
    pub(crate) fn has_room(&mut self, id: ServerId) -> bool {
        let m = self.members(id);
        let room = m.max.is_none_or(|max| m.open.len() < max);
        m.paused |= !room;
        room
    }

    pub(crate) fn add(&mut self, id: ServerId, h: Handle) {
        self.owner.insert(h, id);
        self.members(id).open.insert(h);
    }

    /// `h`'s socket is gone.
    pub(crate) fn remove(&mut self, h: Handle) {
        let Some(id) = self.owner.remove(&h) else { return };
        let m = self.members(id);
        m.open.remove(&h);
        if m.closed && m.open.is_empty() {
            self.servers.remove(&id);
        } else if m.paused && m.max.is_none_or(|max| m.open.len() < max) {
            m.paused = false;
            self.resume.push(id);
        }
    }

    /// How many accepted connections of `id` are still open.
    pub(crate) fn count(&self, id: ServerId) -> usize {
        self.servers.get(&id).map_or(0, |m| m.open.len())
    }

    /// The open connections of `id`, in no particular order.
    pub(crate) fn of(&self, id: ServerId) -> Vec<Handle> {
        self.servers.get(&id).map_or_else(Vec::new, |m| m.open.iter().copied().collect())
    }
}

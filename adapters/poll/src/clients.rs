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
}

/// Connection ↔ server membership for every server of a loop.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    owner: HashMap<Handle, ServerId>,
    servers: Vec<Members>,
    /// Servers that dropped below their limit while paused: their listeners are queued for
    /// accepting by the next iteration.
    pub(crate) resume: Vec<ServerId>,
}

impl Clients {
    fn members(&mut self, id: ServerId) -> &mut Members {
        let i = id.0 as usize;
        if self.servers.len() <= i {
            self.servers.resize_with(i + 1, Members::default);
        }
        &mut self.servers[i]
    }

    /// A new server with its connection limit.
    pub(crate) fn add_server(&mut self, id: ServerId, max: Option<usize>) {
        self.members(id).max = max;
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
        if m.paused && m.max.is_none_or(|max| m.open.len() < max) {
            m.paused = false;
            self.resume.push(id);
        }
    }

    /// How many accepted connections of `id` are still open.
    pub(crate) fn count(&self, id: ServerId) -> usize {
        self.servers.get(id.0 as usize).map_or(0, |m| m.open.len())
    }

    /// The open connections of `id`, in no particular order.
    pub(crate) fn of(&self, id: ServerId) -> Vec<Handle> {
        self.servers.get(id.0 as usize).map_or_else(Vec::new, |m| m.open.iter().copied().collect())
    }
}

//! Unix stream sockets: [`Loop::create_unix_server`] and
//! [`Loop::create_unix_connection`], on a path or (Linux) an abstract name.
//!
//! A path server removes a *stale* socket file before binding — one no process listens on
//! any more (a connect is refused) — but never a live one and never a file that is not a
//! socket; closing the server removes its file (asyncio 3.13's `cleanup_socket`), unless
//! the file was replaced meanwhile.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use aioport::{Protocol, StreamHandle};
use mio::net::UnixListener;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::server::{ListenSocket, ServerEntry};
use crate::sockets::Sock;
use crate::{Error, Loop, ServerId, ServerOptions};

/// The name of a Unix stream socket: a filesystem path, or on Linux an abstract name (no
/// file; it disappears with the last socket bound to it).
///
/// ```
/// use aioport_poll::UnixName;
/// let on_disk = UnixName::from("/run/app.sock");
/// let abstract_name = UnixName::Abstract(b"app-control".to_vec());
/// assert_ne!(on_disk, abstract_name);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnixName {
    /// A socket file.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (without the leading NUL byte).
    Abstract(Vec<u8>),
}

impl From<&str> for UnixName {
    fn from(path: &str) -> Self {
        UnixName::Path(path.into())
    }
}

impl From<&Path> for UnixName {
    fn from(path: &Path) -> Self {
        UnixName::Path(path.to_owned())
    }
}

impl From<PathBuf> for UnixName {
    fn from(path: PathBuf) -> Self {
        UnixName::Path(path)
    }
}

impl fmt::Display for UnixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixName::Path(p) => write!(f, "{}", p.display()),
            UnixName::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

impl UnixName {
    fn addr(&self) -> io::Result<SocketAddrUnix> {
        match self {
            UnixName::Path(p) => Ok(SocketAddrUnix::new(p.as_path())?),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            UnixName::Abstract(name) => Ok(SocketAddrUnix::new_abstract_name(name)?),
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            UnixName::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract Unix socket names exist on Linux only; use a path",
            )),
        }
    }
}

/// A listening Unix stream server: its id and name (the path's file is removed when it is
/// closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixServer {
    id: ServerId,
    name: UnixName,
}

impl UnixServer {
    /// The server's id, for [`Loop`]'s lifecycle methods
    /// ([`close_server`](Loop::close_server), [`wait_closed`](Loop::wait_closed),
    /// [`close_clients`](Loop::close_clients), …).
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The name it listens on.
    pub fn name(&self) -> &UnixName {
        &self.name
    }

    /// Stops listening and removes the socket file; accepted connections go on. False if
    /// it was already closed.
    pub fn close(&self, lp: &mut Loop) -> bool {
        lp.close_server(self.id)
    }
}

/// The socket file a listener created, identified by device and inode so that closing
/// never removes a file someone else put there since. Removed when dropped: when the
/// server is closed, or with its loop.
#[derive(Debug)]
pub(crate) struct BoundFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundFile {
    fn of(path: &Path) -> Option<BoundFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(BoundFile { path: path.to_owned(), dev: m.dev(), ino: m.ino() })
    }
}

impl Drop for BoundFile {
    /// Removes the file if it is still the one bound.
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn unix_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Whether a process listens on the socket file at `path`: a non-blocking connect is
/// refused on a stale file, and succeeds (or finds the backlog full) on a live one.
fn is_live(addr: &SocketAddrUnix) -> io::Result<bool> {
    let fd = unix_socket()?;
    match rustix::net::connect(&fd, addr) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INPROGRESS) => Ok(true),
        Err(Errno::CONNREFUSED) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Binds and listens on `name`, removing a stale socket file first (see the module docs).
fn bind(name: &UnixName, backlog: i32) -> io::Result<(UnixListener, Option<BoundFile>)> {
    let addr = name.addr()?;
    let fd = unix_socket()?;
    match rustix::net::bind(&fd, &addr) {
        Ok(()) => {}
        Err(Errno::ADDRINUSE) if matches!(name, UnixName::Path(_)) => {
            let UnixName::Path(path) = name else { unreachable!() };
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} exists and is not a socket; remove it or choose another path",
                        path.display()
                    ),
                ));
            }
            if is_live(&addr)? {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            rustix::net::bind(&fd, &addr)?;
        }
        Err(e) => return Err(e.into()),
    }
    let file = match name {
        UnixName::Path(p) => BoundFile::of(p),
        UnixName::Abstract(_) => None,
    };
    // On error, `file` is dropped: the file just bound is removed.
    rustix::net::listen(&fd, backlog)?;
    let std = std::os::unix::net::UnixListener::from(fd);
    Ok((UnixListener::from_std(std), file))
}

impl Loop {
    /// Listens on a Unix stream socket (asyncio's `create_unix_server`): each accepted
    /// connection gets a protocol from `factory`. A stale socket file at the path is
    /// removed first (never a live one, never a file that is not a socket); the file is
    /// removed again by [`close_server`](Self::close_server). `options` applies its
    /// backlog and `max_connections`.
    ///
    /// ```
    /// # use aioport::Protocol;
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// let dir = std::env::temp_dir().join(format!("aioport-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("s.sock");
    /// let mut lp = aioport_poll::Loop::new()?;
    /// let server = lp.create_unix_server(path.as_path(), || Box::new(Quiet), Default::default())?;
    /// assert!(path.exists());
    /// server.close(&mut lp);
    /// assert!(!path.exists());
    /// # std::fs::remove_dir(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnixBind`]: the name is taken by a live server or a non-socket file, the
    /// directory does not exist, permission denied, or an abstract name off Linux.
    pub fn create_unix_server(
        &mut self,
        name: impl Into<UnixName>,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
        options: ServerOptions,
    ) -> Result<UnixServer, Error> {
        let name = name.into();
        let (listener, file) = bind(&name, options.backlog_i32())
            .map_err(|error| Error::UnixBind { name: name.clone(), error })?;
        let id = self.servers.next_id();
        let index = match self.add_listener(id, ListenSocket::Unix { listener, _file: file }, false)
        {
            Ok(index) => index,
            Err(error) => return Err(Error::UnixBind { name, error }),
        };
        self.servers.insert(ServerEntry { factory: Box::new(factory), listeners: vec![index] });
        self.io.clients.add_server(id, options.connection_limit());
        Ok(UnixServer { id, name })
    }

    /// Connects to a Unix stream socket (asyncio's `create_unix_connection`);
    /// `connection_made` is delivered before this returns. A Unix connect completes at
    /// once, so this never waits (a path also works through
    /// [`create_connection`](Self::create_connection) with [`aioport::Endpoint::Unix`],
    /// and from callbacks through [`Ctx::connect`](aioport::Ctx::connect)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: nobody listens (`ConnectionRefused`), no such file, the server's
    /// backlog is full (`WouldBlock`), or an abstract name off Linux.
    pub fn create_unix_connection(
        &mut self,
        name: impl Into<UnixName>,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        let addr = name.into().addr()?;
        let fd = unix_socket()?;
        rustix::net::connect(&fd, &addr).map_err(io::Error::from)?;
        let stream = std::os::unix::net::UnixStream::from(fd);
        self.adopt_stream(Sock::Unix(mio::net::UnixStream::from_std(stream)), protocol)
    }
}

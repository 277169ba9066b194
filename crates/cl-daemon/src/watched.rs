//! Small files another process replaces, as clhbd2 reads them before every beat: the
//! "taking over" notice and the echo file.
//!
//! A [`WatchedFile`] is read again only when it changed. By itself it finds that out with one
//! `stat` per use. With a [`DirWatch`] (inotify on the files' directory) vouching for it, it
//! does not even do that: nothing is asked of the kernel until the watch reports the file, or
//! [`REVALIDATE`] has passed (clhbd2's two `stat`s per beat were a tenth of its CPU, issue 12).
//! A watch that is lost (the directory removed, inotify unavailable) leaves the files on their
//! `stat`s; it is not made anew.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

/// A small file another process replaces atomically (write, rename), read again only when it
/// was replaced or changed. The `stat` is made relative to the file's directory, held open:
/// walking the whole path at every beat was a seventh of clhbd2's CPU (issue 12).
pub(crate) struct WatchedFile<T> {
    path: PathBuf,
    /// The directory and the file's name in it, if the directory could be opened.
    dir: Option<(std::fs::File, OsString)>,
    stamp: Option<FileStamp>,
    value: T,
    read: fn(&Path) -> T,
    /// A [`DirWatch`] reports this file's changes ([`WatchedFile::trust_watch`]).
    watched: bool,
    /// Until when the value is current without a `stat`: set at a `stat` of a watched file,
    /// [`REVALIDATE`] ahead, and cleared when the watch reports the file.
    fresh_until: Option<std::time::Instant>,
}

/// How long a watch vouches for a file without a `stat`: what it cannot see (its directory
/// replaced while something else holds it open, another mount over it, a parent renamed)
/// is found at most this late.
pub(crate) const REVALIDATE: std::time::Duration = std::time::Duration::from_secs(1);

/// What tells one version of a file from the next: a rename brings a new inode, a rewrite a
/// new modification or change time or length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    // The stat fields' integer types differ between platforms: the casts are not all no-ops.
    #[allow(clippy::unnecessary_cast)]
    fn of(s: nix::sys::stat::FileStat) -> FileStamp {
        FileStamp {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            len: s.st_size as u64,
            mtime: (s.st_mtime as i64, s.st_mtime_nsec as i64),
            ctime: (s.st_ctime as i64, s.st_ctime_nsec as i64),
        }
    }
}

impl<T> WatchedFile<T> {
    /// Watch `path`, read with `read` (which answers for a missing file too).
    pub(crate) fn new(path: PathBuf, read: fn(&Path) -> T) -> Self {
        let mut dir = Self::open_dir(&path);
        // Stamp first, as in `get`: a version that replaces the file while it is read has a
        // stamp of its own and is read at the next use. Read first, a replacement between the
        // read and the stamp was never read (clhbd2 echoed nothing to a peer for ever).
        let stamp = Self::stamp(&mut dir, &path);
        let value = read(&path);
        WatchedFile { path, dir, stamp, value, read, watched: false, fresh_until: None }
    }

    fn open_dir(path: &Path) -> Option<(std::fs::File, OsString)> {
        let (parent, name) = (path.parent()?, path.file_name()?);
        std::fs::File::open(parent).ok().map(|dir| (dir, name.to_os_string()))
    }

    fn stamp(dir: &mut Option<(std::fs::File, OsString)>, path: &Path) -> Option<FileStamp> {
        let Some((open, name)) = dir.as_ref() else {
            return nix::sys::stat::stat(path).ok().map(FileStamp::of);
        };
        let found = nix::sys::stat::fstatat(open, name.as_os_str(), nix::fcntl::AtFlags::empty());
        // Missing: unless the directory held open was removed (its link count 0; a new one may
        // stand at the path now), it is the file that is missing. The open directory is then
        // given up for the whole path.
        if found.is_err() && nix::sys::stat::fstat(open).is_ok_and(|d| d.st_nlink == 0) {
            *dir = None;
            return Self::stamp(dir, path);
        }
        found.ok().map(FileStamp::of)
    }

    /// From now on a [`DirWatch`] made before this file's first read reports its changes
    /// ([`changed`](Self::changed)): uses between them ask nothing of the kernel.
    pub(crate) fn trust_watch(&mut self) {
        self.watched = true;
        // Not held open: an open directory is not deleted until it is closed, so the watch
        // would never hear that it was removed, and would vouch for a file no longer there.
        // The few stats left walk the whole path.
        self.dir = None;
    }

    /// The watch reported a change (or may have missed one): stat it at the next use.
    pub(crate) fn changed(&mut self) {
        self.fresh_until = None;
    }

    /// The watch is gone: stat the file at every use again.
    pub(crate) fn unwatched(&mut self) {
        self.watched = false;
        self.fresh_until = None;
        self.dir = Self::open_dir(&self.path);
    }

    /// The file's contents as of now.
    pub(crate) fn get(&mut self) -> &T {
        let now = std::time::Instant::now();
        if self.fresh_until.is_some_and(|until| now < until) {
            return &self.value;
        }
        // Fresh from here on: a change from now is reported after this use, and undoes it.
        self.fresh_until = self.watched.then(|| now + REVALIDATE);
        let stamp = Self::stamp(&mut self.dir, &self.path);
        if stamp != self.stamp {
            // Stamp first: a change while reading is then seen the next time.
            self.stamp = stamp;
            self.value = (self.read)(&self.path);
        }
        &self.value
    }
}

/// The inotify descriptor, as tokio's readiness wants it (`AsRawFd`).
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// What a [`DirWatch`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// These of its names (indices) changed, were replaced or removed; maybe none.
    Changed(Vec<usize>),
    /// The watch ended (its directory was removed or moved, or inotify failed).
    Lost,
}

/// inotify on one directory, for the names of some of its files. Its end (the directory
/// removed) is reported once nothing holds the directory open any more.
pub(crate) struct DirWatch {
    fd: AsyncFd<Fd>,
    names: Vec<OsString>,
}

impl DirWatch {
    /// Watch `dir` for changes of the files `names`; needs a tokio runtime with IO enabled.
    pub(crate) fn new(dir: &Path, names: Vec<OsString>) -> io::Result<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, events)?;
        // SAFETY: `Fd` owns the inotify descriptor and hands out that one descriptor for as
        // long as it lives; the AsyncFd owns the `Fd`, so the descriptor stays open and the
        // same until the AsyncFd is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(Fd(inotify), tokio::io::Interest::READABLE)? };
        Ok(DirWatch { fd, names })
    }

    /// Waits for events in the directory and says which of the names they concern.
    pub(crate) async fn changed(&mut self) -> Seen {
        loop {
            let Ok(ready) = self.fd.readable().await else { return Seen::Lost };
            if let Some(seen) = self.take(ready) {
                return seen;
            }
        }
    }

    /// What the watch has seen and not said yet, without waiting: None when nothing. No system
    /// call is made unless the runtime saw the descriptor readable (a change made at the same
    /// time as a beat is then taken before it).
    pub(crate) fn pending(&mut self) -> Option<Seen> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.fd.poll_read_ready(&mut cx) {
            std::task::Poll::Pending => None,
            std::task::Poll::Ready(Ok(ready)) => self.take(ready),
            std::task::Poll::Ready(Err(_)) => Some(Seen::Lost),
        }
    }

    /// The events waiting on a descriptor found readable; None when there were none after all
    /// (its readiness is then cleared) or the read was interrupted (asked again).
    fn take(&self, mut ready: tokio::io::unix::AsyncFdReadyGuard<'_, Fd>) -> Option<Seen> {
        match ready.get_inner().0.read_events() {
            Ok(events) => Some(self.seen(events)),
            Err(nix::errno::Errno::EAGAIN) => {
                ready.clear_ready();
                None
            }
            Err(nix::errno::Errno::EINTR) => None,
            Err(_) => Some(Seen::Lost),
        }
    }

    fn seen(&self, events: Vec<nix::sys::inotify::InotifyEvent>) -> Seen {
        let mut changed = Vec::new();
        for event in events {
            let gone = AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF;
            if event.mask.intersects(gone) {
                return Seen::Lost;
            }
            // Events were dropped: any of the files may have changed.
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                changed = (0..self.names.len()).collect();
                continue;
            }
            let Some(name) = event.name else { continue };
            if let Some(i) = self.names.iter().position(|n| *n == name) {
                if !changed.contains(&i) {
                    changed.push(i);
                }
            }
        }
        Seen::Changed(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        crate::guardctl::read_notice_at(path)
    }

    /// Runs `test` on a runtime like clhbd2's (one thread, IO and time).
    fn on_runtime(test: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(test);
    }

    #[test]
    fn a_watched_file_is_read_again_only_when_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notice");
        let mut watched = WatchedFile::new(path.clone(), lines);
        assert!(watched.get().is_empty(), "a missing file reads as empty");
        cl_paths::write_atomic(&path, b"node1").expect("write");
        assert_eq!(watched.get(), &vec!["node1".to_string()]);
        cl_paths::write_atomic(&path, b"node2").expect("write");
        assert_eq!(watched.get(), &vec!["node2".to_string()]);
        std::fs::remove_file(&path).expect("remove");
        assert!(watched.get().is_empty(), "a removed file reads as empty again");
    }

    /// Reads the file, and the first time replaces it while "reading" (clhbd writing the echo
    /// file while clhbd2 starts).
    fn read_then_replaced(path: &Path) -> Vec<String> {
        static REPLACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let read = lines(path);
        if !REPLACED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            cl_paths::write_atomic(path, b"node2").expect("write");
        }
        read
    }

    #[test]
    fn a_file_replaced_while_first_read_is_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("echo");
        cl_paths::write_atomic(&path, b"").expect("write");
        let mut watched = WatchedFile::new(path.clone(), read_then_replaced);
        assert_eq!(watched.get(), &vec!["node2".to_string()], "the replacement is read");
    }

    #[test]
    fn a_watched_file_is_found_again_after_its_directory_was_made_anew() {
        let top = tempfile::tempdir().expect("temp dir");
        let dir = top.path().join("run");
        std::fs::create_dir(&dir).expect("mkdir");
        let path = dir.join("notice");
        let mut watched = WatchedFile::new(path.clone(), lines);
        assert!(watched.get().is_empty());
        std::fs::remove_dir(&dir).expect("rmdir");
        std::fs::create_dir(&dir).expect("mkdir again");
        cl_paths::write_atomic(&path, b"node1").expect("write");
        assert_eq!(watched.get(), &vec!["node1".to_string()]);
    }

    /// The next thing the watch saw, or None within a second.
    async fn next(watch: &mut DirWatch) -> Option<Seen> {
        tokio::time::timeout(std::time::Duration::from_secs(1), watch.changed()).await.ok()
    }

    #[test]
    fn a_change_not_waited_for_is_found_before_the_next_use() {
        on_runtime(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("echo");
            let mut watch =
                DirWatch::new(dir.path(), vec!["notice".into(), "echo".into()]).expect("inotify");
            assert_eq!(watch.pending(), None, "nothing happened");
            cl_paths::write_atomic(&path, b"x").expect("write");
            // The runtime looks at its descriptors when its task yields.
            tokio::task::yield_now().await;
            assert_eq!(watch.pending(), Some(Seen::Changed(vec![1])));
            tokio::task::yield_now().await;
            assert_eq!(watch.pending(), None, "said once");
        });
    }

    #[test]
    fn a_directory_watch_reports_the_files_it_watches_and_its_own_end() {
        on_runtime(async {
            let top = tempfile::tempdir().expect("temp dir");
            let dir = top.path().join("run");
            std::fs::create_dir(&dir).expect("mkdir");
            let path = dir.join("notice");
            let mut watch =
                DirWatch::new(&dir, vec!["notice".into(), "echo".into()]).expect("inotify");
            let mut notice = WatchedFile::new(path.clone(), lines);
            notice.trust_watch();
            assert!(notice.get().is_empty());
            // Unreported, a change is not looked for: the watch vouches for the file.
            cl_paths::write_atomic(&path, b"node1").expect("write");
            assert!(notice.get().is_empty(), "read again before the watch reported it");
            let seen = next(&mut watch).await.expect("the replacement is reported");
            assert_eq!(seen, Seen::Changed(vec![0]));
            notice.changed();
            assert_eq!(notice.get(), &vec!["node1".to_string()]);
            // Another file of the directory: reported as none of the names.
            std::fs::write(dir.join("other"), b"x").expect("write other");
            assert_eq!(next(&mut watch).await, Some(Seen::Changed(vec![])));
            // The directory goes: the watch ends, and the file is stat-ed at each use again.
            std::fs::remove_file(dir.join("other")).expect("rm other");
            std::fs::remove_file(&path).expect("rm notice");
            std::fs::remove_dir(&dir).expect("rmdir");
            let mut lost = false;
            while let Some(seen) = next(&mut watch).await {
                if seen == Seen::Lost {
                    lost = true;
                    break;
                }
            }
            assert!(lost, "the end of the watch is reported");
            notice.unwatched();
            std::fs::create_dir(&dir).expect("mkdir again");
            cl_paths::write_atomic(&path, b"node2").expect("write");
            assert_eq!(notice.get(), &vec!["node2".to_string()]);
            cl_paths::write_atomic(&path, b"node1").expect("write");
            assert_eq!(notice.get(), &vec!["node1".to_string()], "stat-ed at every use");
        });
    }
}

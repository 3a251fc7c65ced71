//! A job's first process, born inside its cgroup.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`) takes the kernel's cgroup
//! thread-group lock for writing, which waits for an RCU grace period: 0.4 ms at the median on
//! the 2-core benchmark machine and up to tens of milliseconds at the tail, and it forces the
//! spawn through `fork` (a `pre_exec` hook) where `posix_spawn` would `vfork`. `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7) creates the process in the cgroup instead, taking that lock
//! only for reading. The standard library cannot pass that flag, so jobs that have a cgroup
//! and no terminal are started here: `clone3` as `posix_spawn` uses `clone` on x86-64 (the
//! child shares the daemon's memory on a stack of its own while the calling thread waits for
//! its `execve`: no page table copied, nothing copied on write afterwards), like `fork`
//! elsewhere; then, in the child, only system calls on what the parent prepared (its standard
//! fds, its directory, its process group, the signal state), and `execve`. Where the kernel or a seccomp filter refuses `clone3`, [`into_cgroup`] says
//! [`Spawn::Unsupported`] (once; later calls do not try) and the caller uses the standard
//! library and the write to `cgroup.procs`.
//!
//! [`Process`] is what the pump needs of a started job either way: its pid and its pipes, and
//! a blocking wait for its exit status.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};

/// A started job's first process, as the pump uses it.
#[derive(Debug)]
pub(crate) struct Process {
    /// Its process id.
    pub pid: u32,
    /// The write end of its stdin pipe, when it reads one.
    pub stdin: Option<OwnedFd>,
    /// The read end of its stdout pipe, unless it writes elsewhere.
    pub stdout: Option<OwnedFd>,
    /// The read end of its stderr pipe, unless it writes elsewhere.
    pub stderr: Option<OwnedFd>,
}

impl Process {
    /// The process the standard library started (which is not waited for when dropped).
    pub fn from_child(mut child: std::process::Child) -> Process {
        Process {
            pid: child.id(),
            stdin: child.stdin.take().map(OwnedFd::from),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
        }
    }

    /// Reaps the process if it has ended; `None` if it still runs.
    pub fn try_wait(&self) -> std::io::Result<Option<ExitStatus>> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32)
            .ok_or_else(|| std::io::Error::other("no process 0"))?;
        loop {
            match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
                Ok(status) => return Ok(status.map(|(_, s)| ExitStatus::from_raw(s.as_raw()))),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the process to end and reaps it.
    pub fn wait(&self) -> std::io::Result<ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32)
            .ok_or_else(|| std::io::Error::other("no process 0"))?;
        loop {
            match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
                Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
                Ok(None) => return Err(std::io::Error::other("no status from waitpid")),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What the job's process is given for its standard fds.
pub(crate) enum Stdio {
    /// Fds the client passed: the job uses them as they are.
    Passed([OwnedFd; 3]),
    /// Pipes to the daemon (and stdin from a pipe when `stdin`, else `/dev/null`).
    Piped { stdin: bool },
}

/// Everything [`into_cgroup`] needs, prepared in the parent (the child may not allocate).
pub(crate) struct Launch<'a> {
    /// The program's resolved path.
    pub path: &'a Path,
    /// Its arguments, the first being the name it is run as.
    pub argv: &'a [OsString],
    /// Its whole environment.
    pub env: std::collections::BTreeMap<OsString, OsString>,
    /// Its working directory, if not the daemon's.
    pub cwd: Option<&'a Path>,
    /// Its standard fds.
    pub stdio: Stdio,
    /// Its cgroup's directory.
    pub cgroup: &'a OwnedFd,
}

/// What [`into_cgroup`] did.
pub(crate) enum Spawn {
    /// The process runs in its cgroup.
    Started(Process),
    /// It could not start: the error as `execve` (or the set-up before it) gave it.
    Failed(std::io::Error),
    /// `clone3` into a cgroup is not available here; nothing was started, the fds come back.
    Unsupported(Stdio),
}

/// Set once `clone3` with `CLONE_INTO_CGROUP` has been refused.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `CLONE_INTO_CGROUP` (linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The child's side, all of it prepared: raw pointers and fds only.
struct ChildPlan<'a> {
    path: &'a CStr,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    cwd: Option<&'a CStr>,
    /// The fds to become 0, 1 and 2.
    stdio: [RawFd; 3],
    /// Where the child reports a failure before `execve` succeeds (close-on-exec).
    report: RawFd,
}

/// Starts `launch` in its cgroup with `clone3`.
pub(crate) fn into_cgroup(launch: Launch<'_>) -> Spawn {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Spawn::Unsupported(launch.stdio);
    }
    match prepare_and_clone(&launch) {
        Ok(Some(process)) => Spawn::Started(process),
        Ok(None) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            tracing::info!(
                "clone3 into a cgroup is not available: jobs move into their cgroups after fork"
            );
            Spawn::Unsupported(launch.stdio)
        }
        Err(e) => Spawn::Failed(e),
    }
}

fn cstring(bytes: &OsStr) -> std::io::Result<CString> {
    CString::new(bytes.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

/// Prepares the child's plan, clones and waits for the `execve`. `Ok(None)`: `clone3` refused.
fn prepare_and_clone(launch: &Launch<'_>) -> std::io::Result<Option<Process>> {
    let path = cstring(launch.path.as_os_str())?;
    let argv: Vec<CString> = launch
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = launch
        .env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.clone();
            pair.push("=");
            pair.push(v);
            cstring(&pair)
        })
        .collect::<Result<_, _>>()?;
    let cwd = launch.cwd.map(|cwd| cstring(cwd.as_os_str())).transpose()?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    // The parent keeps these ends; the child's ends are closed when this function returns.
    let (mut parent_stdin, mut parent_stdout, mut parent_stderr) = (None, None, None);
    let child_fds: [OwnedFd; 3] = match &launch.stdio {
        Stdio::Passed(fds) => [
            fds[0].try_clone()?,
            fds[1].try_clone()?,
            fds[2].try_clone()?,
        ],
        Stdio::Piped { stdin } => {
            let child_stdin = if *stdin {
                let (read, write) = cloexec_pipe()?;
                parent_stdin = Some(write);
                read
            } else {
                std::fs::File::open("/dev/null")?.into()
            };
            let (out_read, out_write) = cloexec_pipe()?;
            let (err_read, err_write) = cloexec_pipe()?;
            parent_stdout = Some(out_read);
            parent_stderr = Some(err_read);
            [child_stdin, out_write, err_write]
        }
    };
    let (report_read, report_write) = cloexec_pipe()?;
    let plan = ChildPlan {
        path: &path,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        cwd: cwd.as_deref(),
        stdio: [
            child_fds[0].as_raw_fd(),
            child_fds[1].as_raw_fd(),
            child_fds[2].as_raw_fd(),
        ],
        report: report_write.as_raw_fd(),
    };
    let pid = clone_into(launch.cgroup, &plan);
    drop(report_write);
    drop(child_fds);
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            // No clone3 (before 5.3, or a seccomp filter's answer), no CLONE_INTO_CGROUP
            // (before 5.7), or a cgroup it cannot start in (a domain with threads...).
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM | libc::EOPNOTSUPP) => {
                Ok(None)
            }
            _ => Err(error),
        };
    }
    let process = Process {
        pid: pid as u32,
        stdin: parent_stdin.take(),
        stdout: parent_stdout.take(),
        stderr: parent_stderr.take(),
    };
    // The report pipe closes at the child's successful execve; before that, a failure is
    // written there as the errno's four bytes.
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match rustix::io::read(&report_read, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if got == 0 {
        return Ok(Some(process));
    }
    // The child exits at once after reporting: reap it.
    let _ = process.wait();
    Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// Bytes of the stack the child runs on between `clone3` and `execve` (x86-64).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;

/// Clones a child into the cgroup `cgroup` that runs `plan` (it never returns here); the
/// child's pid, or -1 with errno set.
///
/// On x86-64 as `posix_spawn` does: the child shares this process's memory (`CLONE_VM`) on a
/// stack of its own, and this thread waits until it has executed the program or exited
/// (`CLONE_VFORK`); no page table is copied, and nothing of the daemon is copied on write
/// afterwards. Every signal is blocked meanwhile; the child resets handlers before it
/// unblocks them, so that no handler of the daemon runs in it. Elsewhere like `fork`.
fn clone_into(cgroup: &OwnedFd, plan: &ChildPlan<'_>) -> isize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut stack = Box::<[u8]>::new_uninit_slice(CHILD_STACK);
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP | libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.as_mut_ptr() as u64,
            stack_size: CHILD_STACK as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        let child_entry: extern "C" fn(*const ChildPlan<'_>) -> ! = child_entry;
        // SAFETY: all signals are blocked for this thread around the clone, and its mask is
        // restored after; `all` and `old` are sigset_t values of this frame, `all` filled by
        // sigfillset.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let pid: isize;
        // SAFETY: clone3 with `args`, a valid clone_args of the size given, naming a stack
        // this frame owns until the call returns, which with CLONE_VFORK is after the child
        // has executed its program or exited. The child starts on that stack with the
        // registers of this call: it aligns the stack and calls `child_entry` with `plan`
        // (r12), which never returns; `plan` and all it points to live in the caller's frame
        // and heap, untouched until then. The parent path falls through with the result in
        // rax; the syscall clobbers rcx and r11 and touches no stack of this thread.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "and rsp, -16",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 as isize => pid,
                in("rdi") &args as *const CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") plan as *const ChildPlan<'_>,
                in("r13") child_entry,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        drop(stack);
        if pid < 0 {
            // SAFETY: setting this thread's errno, as a failed libc call would.
            unsafe { *libc::__errno_location() = -pid as i32 };
            return -1;
        }
        pid
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack of its own is fork(2) with one
        // more flag: the child gets a copy of this process holding only the calling thread,
        // and continues here on its copy of this thread's stack, where it runs `run_child`
        // alone (async-signal-safe system calls on values prepared before, no allocation, no
        // lock, no return). `args` is a valid clone_args of the size given.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            run_child(plan);
        }
        pid as isize
    }
}

/// Where the x86-64 child starts, on its own stack.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(plan: *const ChildPlan<'_>) -> ! {
    // SAFETY: `clone_into` passes a pointer to a plan that outlives the child's use of it
    // (the parent waits, CLONE_VFORK).
    run_child(unsafe { &*plan })
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The child, between `clone3` and `execve`: async-signal-safe system calls only.
fn run_child(plan: &ChildPlan<'_>) -> ! {
    let step = child_steps(plan);
    let errno = step.err().unwrap_or(libc::ENOEXEC).to_ne_bytes();
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `errno` lives on this stack.
    unsafe {
        libc::write(plan.report, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

/// Sets up the child and executes the program; returns only with the errno of what failed.
fn child_steps(plan: &ChildPlan<'_>) -> Result<std::convert::Infallible, i32> {
    fn check(result: libc::c_int) -> Result<(), i32> {
        if result < 0 {
            // SAFETY: reading errno, a thread-local int, right after the failed call.
            Err(unsafe { *libc::__errno_location() })
        } else {
            Ok(())
        }
    }
    // SAFETY (every call below): plain system calls on fds and C strings the parent prepared,
    // which outlive this child's use of them (it only execs or exits); each is
    // async-signal-safe.
    unsafe {
        for (target, &source) in plan.stdio.iter().enumerate() {
            let target = target as RawFd;
            if source == target {
                // Already in place: only the close-on-exec flag must go.
                check(libc::fcntl(source, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(source, target))?;
            }
        }
        if let Some(cwd) = plan.cwd {
            check(libc::chdir(cwd.as_ptr()))?;
        }
        check(libc::setpgid(0, 0))?;
        // No handler of the daemon may run here (this child may share its memory), and the
        // job starts as a fresh process would: every signal the daemon handles or ignores
        // (SIGPIPE, as the Rust runtime does; SIGXFSZ, so that a log write past a file-size
        // limit fails instead of killing it) gets the default action before signals are
        // unblocked. The dispositions the daemon inherited were reset at its start
        // (signals::reset_inherited_signal_state). A signal the C library reserves for
        // itself refuses the change and stays as it is.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=64 {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        check(libc::sigemptyset(&mut empty))?;
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut(),
        ))?;
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        Err(*libc::__errno_location())
    }
}

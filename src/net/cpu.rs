//! Tuning for the timed send/receive threads: CPU pinning (`--cpu`: parsing the CPU list,
//! setting the calling thread's affinity) and a tight timer slack for precise sleeps.

use std::collections::HashSet;
use std::io;

/// Highest CPU number accepted (exclusive): the size of glibc's `cpu_set_t`.
pub const MAX_CPUS: usize = 1024;

/// Parses a CPU list such as `0,2-3` into `[0, 2, 3]`, in the order written.
///
/// Rejects empty items, reversed ranges, CPUs ≥ [`MAX_CPUS`] and CPUs listed twice, each
/// with a message naming the offending item.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let parse_cpu = |t: &str| -> Result<usize, String> {
        let cpu = t
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{:?} is not a CPU number", t.trim()))?;
        if cpu >= MAX_CPUS {
            return Err(format!("CPU {cpu} is out of range (max {})", MAX_CPUS - 1));
        }
        Ok(cpu)
    };
    let mut cpus = Vec::new();
    let mut seen = HashSet::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item in CPU list {s:?}"));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (parse_cpu(lo)?, parse_cpu(hi)?),
            None => {
                let cpu = parse_cpu(item)?;
                (cpu, cpu)
            }
        };
        if lo > hi {
            return Err(format!("CPU range {item:?} runs backwards"));
        }
        for cpu in lo..=hi {
            if !seen.insert(cpu) {
                return Err(format!("CPU {cpu} is listed twice"));
            }
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu` (sched_setaffinity on Linux; unsupported elsewhere).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= MAX_CPUS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is out of range (max {})", MAX_CPUS - 1),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < MAX_CPUS = CPU_SETSIZE, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins the calling thread to `cpu` (sched_setaffinity on Linux; unsupported elsewhere).
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("pinning to CPU {cpu} is only supported on Linux"),
    ))
}

/// Sets the calling thread's timer slack to 1 ns (Linux `PR_SET_TIMERSLACK`), so its sleeps
/// wake when asked instead of up to 50 µs late (the default slack). Best effort: returns
/// whether it was applied; always false off Linux.
pub fn tighten_timer_slack() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only the calling
        // thread's scheduling attributes; the unused trailing arguments are zero.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_in_order() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_cpu_list(" 3 , 1 - 2 ").unwrap(), vec![3, 1, 2]);
        assert_eq!(parse_cpu_list("5-5").unwrap(), vec![5]);
        assert_eq!(parse_cpu_list("1023").unwrap(), vec![1023]);
    }

    #[test]
    fn bad_cpu_lists_name_the_problem() {
        assert_eq!(
            parse_cpu_list("").unwrap_err(),
            "empty item in CPU list \"\""
        );
        assert_eq!(
            parse_cpu_list("0,,1").unwrap_err(),
            "empty item in CPU list \"0,,1\""
        );
        assert_eq!(
            parse_cpu_list("x").unwrap_err(),
            "\"x\" is not a CPU number"
        );
        assert_eq!(
            parse_cpu_list("-1").unwrap_err(),
            "\"\" is not a CPU number"
        );
        assert_eq!(
            parse_cpu_list("3-1").unwrap_err(),
            "CPU range \"3-1\" runs backwards"
        );
        assert_eq!(
            parse_cpu_list("1,0-2").unwrap_err(),
            "CPU 1 is listed twice"
        );
        assert_eq!(
            parse_cpu_list("0-4000000000").unwrap_err(),
            "CPU 4000000000 is out of range (max 1023)"
        );
        assert!(parse_cpu_list("1-2-3").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn timer_slack_is_tightened_for_the_calling_thread_only() {
        // SAFETY: PR_GET_TIMERSLACK takes no arguments and returns the slack in ns.
        let slack = || unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        let before = slack();
        let inside = std::thread::spawn(move || (tighten_timer_slack(), slack()))
            .join()
            .unwrap();
        assert_eq!(inside, (true, 1));
        assert_eq!(slack(), before);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_to_an_allowed_cpu_works() {
        // Pin a scratch thread to a CPU this process may use, so the test thread is untouched.
        // SAFETY: zeroed cpu_set_t is the empty set; sched_getaffinity fills it for pid 0.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&allowed), &mut allowed) };
        assert_eq!(rc, 0);
        // SAFETY: every index < CPU_SETSIZE lies inside `allowed`.
        let cpu = (0..MAX_CPUS)
            .find(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
            .expect("some CPU is allowed");
        std::thread::spawn(move || pin_current_thread(cpu))
            .join()
            .unwrap()
            .unwrap();
        let err = pin_current_thread(MAX_CPUS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

//! What the kernel put on the initial stack: argc, argv, envp and the auxiliary vector. The
//! strings live as long as the process, so they are handed out as `'static`.

use core::ffi::CStr;

const AT_NULL: usize = 0;
const AT_SECURE: usize = 23;
const AT_RANDOM: usize = 25;
const AT_EXECFN: usize = 31;

pub struct Args {
    argc: usize,
    pub argv: *const *const u8,
    pub envp: *const *const u8,
    auxv: *const usize,
}

impl Args {
    /// # Safety
    /// `sp` must be the stack pointer the kernel gave `_start`.
    pub unsafe fn from_stack(sp: *const usize) -> Args {
        // SAFETY: the System V ABI lays out argc, argv[argc], NULL, envp..., NULL, auxv pairs.
        unsafe {
            let argc = *sp;
            let argv = sp.add(1) as *const *const u8;
            let envp = argv.add(argc + 1);
            let mut end = envp;
            while !(*end).is_null() {
                end = end.add(1);
            }
            Args {
                argc,
                argv,
                envp,
                auxv: end.add(1) as *const usize,
            }
        }
    }

    pub fn arg_count(&self) -> usize {
        self.argc
    }

    /// Argument `i`, if there is one.
    pub fn arg(&self, i: usize) -> Option<&'static CStr> {
        if i >= self.argc {
            return None;
        }
        // SAFETY: argv holds argc pointers, each NULL or a C string.
        unsafe { cstr_at(*self.argv.add(i)) }
    }

    pub fn arg0(&self) -> &'static [u8] {
        // SAFETY: argv is NULL-terminated; argv[0] is either NULL or a C string.
        unsafe { cstr_at(*self.argv) }
            .map(CStr::to_bytes)
            .unwrap_or(b"")
    }

    /// The environment, as `NAME=value` byte strings.
    pub fn env_entries(&self) -> impl Iterator<Item = &'static [u8]> {
        let mut p = self.envp;
        core::iter::from_fn(move || {
            // SAFETY: envp is a NULL-terminated array of C strings; we stop at the NULL.
            unsafe {
                let s = cstr_at(*p)?;
                p = p.add(1);
                Some(s.to_bytes())
            }
        })
    }

    /// The value of variable `name`, or None when unset. Under AT_SECURE (setuid and the
    /// like) no variable is read at all.
    pub fn env(&self, name: &[u8]) -> Option<&'static [u8]> {
        if self.aux(AT_SECURE).unwrap_or(0) != 0 {
            return None;
        }
        self.env_entries().find_map(|e| {
            let rest = e.strip_prefix(name)?;
            rest.strip_prefix(b"=")
        })
    }

    fn aux(&self, key: usize) -> Option<usize> {
        let mut p = self.auxv;
        // SAFETY: the auxiliary vector is (key, value) pairs ending with AT_NULL.
        unsafe {
            while *p != AT_NULL {
                if *p == key {
                    return Some(*p.add(1));
                }
                p = p.add(2);
            }
        }
        None
    }

    /// The 16 random bytes the kernel gives every new program.
    pub fn random(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        if let Some(p) = self.aux(AT_RANDOM).filter(|p| *p != 0) {
            // SAFETY: AT_RANDOM points to 16 bytes on our stack.
            bytes.copy_from_slice(unsafe { core::slice::from_raw_parts(p as *const u8, 16) });
        }
        bytes
    }

    /// The path this program was executed by, as the kernel recorded it.
    pub fn execfn(&self) -> Option<&'static CStr> {
        // SAFETY: AT_EXECFN points to a C string on our stack.
        self.aux(AT_EXECFN)
            .and_then(|a| unsafe { cstr_at(a as *const u8) })
    }
}

/// # Safety
/// `p` must be null or point to a NUL-terminated string that lives for the whole process.
unsafe fn cstr_at(p: *const u8) -> Option<&'static CStr> {
    // SAFETY: guaranteed by the caller.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p as *const core::ffi::c_char) })
}

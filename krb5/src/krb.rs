//! Safe RAII wrappers over the few libkrb5 calls aklog makes.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_uint};
use std::ptr;

use zeroize::Zeroizing;

use crate::ffi;
use crate::{AfsToken, Error, Request, RXKAD_TKT_TYPE_KERBEROS_V5};

/// Error codes that mean "there are no (usable) credentials: run kinit".
const NO_CREDS_CODES: &[ffi::krb5_error_code] = &[
    ffi::KRB5_FCC_NOFILE,
    ffi::KRB5_CC_NOTFOUND,
    ffi::KRB5_CC_END,
    ffi::KRB5_CC_FORMAT,
    ffi::KRB5_NO_TKT_SUPPLIED,
    ffi::KRB5KRB_AP_ERR_TKT_EXPIRED,
];

fn is_no_creds(code: ffi::krb5_error_code) -> bool {
    NO_CREDS_CODES.contains(&code)
}

fn cstring(what: &str, s: &str) -> Result<CString, Error> {
    CString::new(s)
        .map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte: {s:?}")))
}

/// Copies `len` bytes at `data` (a `krb5_data`-style buffer) into a Vec.
///
/// # Safety
/// `data` must be valid for `len` bytes, or `len` must be 0.
unsafe fn copy_bytes(data: *const c_char, len: c_uint) -> Vec<u8> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `data` points to `len` readable bytes.
    unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) }.to_vec()
}

/// An owned `krb5_context`.
struct Context(ffi::krb5_context);

impl Context {
    fn new() -> Result<Self, Error> {
        let mut ctx: ffi::krb5_context = ptr::null_mut();
        // SAFETY: out-pointer to a local; on failure nothing is allocated.
        let code = unsafe { ffi::krb5_init_context(&mut ctx) };
        if code != 0 || ctx.is_null() {
            return Err(Error::Krb5 {
                call: "krb5_init_context",
                code,
                message: "cannot initialise Kerberos (check krb5.conf / KRB5_CONFIG)".into(),
            });
        }
        Ok(Context(ctx))
    }

    /// The text libkrb5 has for `code` (including extended context).
    fn message(&self, code: ffi::krb5_error_code) -> String {
        // SAFETY: valid context; the returned string is owned by us until
        // krb5_free_error_message, and is copied before that.
        unsafe {
            let m = ffi::krb5_get_error_message(self.0, code);
            if m.is_null() {
                return format!("error {code}");
            }
            let s = CStr::from_ptr(m).to_string_lossy().into_owned();
            ffi::krb5_free_error_message(self.0, m);
            s
        }
    }

    fn err(&self, call: &'static str, code: ffi::krb5_error_code) -> Error {
        Error::Krb5 {
            call,
            code,
            message: self.message(code),
        }
    }

    fn default_realm(&self) -> Result<String, Error> {
        let mut realm: *mut c_char = ptr::null_mut();
        // SAFETY: valid context, out-pointer to a local.
        let code = unsafe { ffi::krb5_get_default_realm(self.0, &mut realm) };
        if code != 0 {
            return Err(self.err("krb5_get_default_realm", code));
        }
        // SAFETY: on success `realm` is a NUL-terminated string we must free.
        unsafe {
            let s = CStr::from_ptr(realm).to_string_lossy().into_owned();
            ffi::krb5_free_default_realm(self.0, realm);
            Ok(s)
        }
    }

    /// First realm of `krb5_get_host_realm(host)`; `None` if it fails or is
    /// empty (the referral realm).
    fn host_realm(&self, host: &str) -> Option<String> {
        let host = CString::new(host).ok()?;
        let mut list: *mut *mut c_char = ptr::null_mut();
        // SAFETY: valid context and C string; out-pointer to a local.
        let code = unsafe { ffi::krb5_get_host_realm(self.0, host.as_ptr(), &mut list) };
        if code != 0 || list.is_null() {
            return None;
        }
        // SAFETY: on success `list` is a NULL-terminated array of strings,
        // freed with krb5_free_host_realm after copying the first.
        unsafe {
            let first = *list;
            let s =
                (!first.is_null()).then(|| CStr::from_ptr(first).to_string_lossy().into_owned());
            ffi::krb5_free_host_realm(self.0, list);
            s.filter(|r| !r.is_empty())
        }
    }

    fn default_ccache_name(&self) -> String {
        // SAFETY: valid context; the result is owned by the context and only
        // read here.
        unsafe {
            let n = ffi::krb5_cc_default_name(self.0);
            if n.is_null() {
                "(default)".into()
            } else {
                CStr::from_ptr(n).to_string_lossy().into_owned()
            }
        }
    }

    fn ccache(&self, name: Option<&str>) -> Result<Ccache<'_>, Error> {
        let mut cc: ffi::krb5_ccache = ptr::null_mut();
        let (call, code) = match name {
            Some(n) => {
                let n = cstring("ccache name", n)?;
                // SAFETY: valid context and C string; out-pointer to a local.
                ("krb5_cc_resolve", unsafe {
                    ffi::krb5_cc_resolve(self.0, n.as_ptr(), &mut cc)
                })
            }
            // SAFETY: valid context; out-pointer to a local.
            None => ("krb5_cc_default", unsafe {
                ffi::krb5_cc_default(self.0, &mut cc)
            }),
        };
        if code != 0 {
            return Err(self.err(call, code));
        }
        Ok(Ccache { ctx: self, cc })
    }

    /// `krb5_build_principal(ctx, &p, realm, "afs", [instance], NULL)`.
    fn afs_principal(&self, instance: Option<&str>, realm: &str) -> Result<Principal<'_>, Error> {
        let crealm = cstring("realm", realm)?;
        let afs = cstring("service", "afs")?;
        let inst = instance.map(|i| cstring("cell", i)).transpose()?;
        let rlen = c_uint::try_from(realm.len())
            .map_err(|_| Error::InvalidArgument("realm too long".into()))?;
        let mut p: ffi::krb5_principal = ptr::null_mut();
        let null: *const c_char = ptr::null();
        // SAFETY: variadic list of NUL-terminated component strings ended by
        // a NULL pointer, all alive for the call; out-pointer to a local.
        let code = unsafe {
            match &inst {
                Some(i) => ffi::krb5_build_principal(
                    self.0,
                    &mut p,
                    rlen,
                    crealm.as_ptr(),
                    afs.as_ptr(),
                    i.as_ptr(),
                    null,
                ),
                None => ffi::krb5_build_principal(
                    self.0,
                    &mut p,
                    rlen,
                    crealm.as_ptr(),
                    afs.as_ptr(),
                    null,
                ),
            }
        };
        if code != 0 {
            return Err(self.err("krb5_build_principal", code));
        }
        Ok(Principal { ctx: self, p })
    }

    /// `krb5_unparse_name`.
    fn unparse(&self, p: ffi::krb5_const_principal) -> Result<String, Error> {
        let mut name: *mut c_char = ptr::null_mut();
        // SAFETY: `p` is a valid principal owned by the caller; out-pointer
        // to a local.
        let code = unsafe { ffi::krb5_unparse_name(self.0, p, &mut name) };
        if code != 0 {
            return Err(self.err("krb5_unparse_name", code));
        }
        // SAFETY: on success `name` is a NUL-terminated string we must free.
        unsafe {
            let s = CStr::from_ptr(name).to_string_lossy().into_owned();
            ffi::krb5_free_unparsed_name(self.0, name);
            Ok(s)
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is valid and everything borrowing it (ccaches,
        // principals, creds) has been dropped before, by the borrow checker.
        unsafe { ffi::krb5_free_context(self.0) }
    }
}

/// An open `krb5_ccache`.
struct Ccache<'c> {
    ctx: &'c Context,
    cc: ffi::krb5_ccache,
}

impl<'c> Ccache<'c> {
    fn principal(&self) -> Result<Principal<'c>, ffi::krb5_error_code> {
        let mut p: ffi::krb5_principal = ptr::null_mut();
        // SAFETY: valid context and ccache; out-pointer to a local.
        let code = unsafe { ffi::krb5_cc_get_principal(self.ctx.0, self.cc, &mut p) };
        if code != 0 {
            return Err(code);
        }
        Ok(Principal { ctx: self.ctx, p })
    }

    /// `krb5_get_credentials` for `client` → `server` (from the ccache, or
    /// from the KDC with the TGT in the ccache).
    fn get_credentials(
        &self,
        client: &Principal<'_>,
        server: &Principal<'_>,
    ) -> Result<Creds<'c>, ffi::krb5_error_code> {
        // Only client and server are set: the principals stay owned by their
        // wrappers, so `increds` must never be passed to krb5_free_cred_contents.
        let mut increds = ffi::krb5_creds {
            client: client.p,
            server: server.p,
            ..Default::default()
        };
        let mut out: *mut ffi::krb5_creds = ptr::null_mut();
        // SAFETY: valid context, ccache and in-creds; out-pointer to a local.
        let code =
            unsafe { ffi::krb5_get_credentials(self.ctx.0, 0, self.cc, &mut increds, &mut out) };
        if code != 0 || out.is_null() {
            return Err(if code != 0 {
                code
            } else {
                ffi::KRB5_CC_NOTFOUND
            });
        }
        Ok(Creds {
            ctx: self.ctx,
            c: out,
        })
    }
}

impl Drop for Ccache<'_> {
    fn drop(&mut self) {
        // SAFETY: the ccache was opened with this context and is closed once.
        unsafe {
            ffi::krb5_cc_close(self.ctx.0, self.cc);
        }
    }
}

/// An owned `krb5_principal`.
struct Principal<'c> {
    ctx: &'c Context,
    p: ffi::krb5_principal,
}

impl Principal<'_> {
    fn name(&self) -> Result<String, Error> {
        self.ctx.unparse(self.p)
    }

    fn realm(&self) -> String {
        // SAFETY: a valid principal's realm is a krb5_data of `length` bytes.
        let bytes = unsafe { copy_bytes((*self.p).realm.data, (*self.p).realm.length) };
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Principal<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by libkrb5 with this context, freed once.
        unsafe { ffi::krb5_free_principal(self.ctx.0, self.p) }
    }
}

/// Credentials returned by `krb5_get_credentials`.
struct Creds<'c> {
    ctx: &'c Context,
    c: *mut ffi::krb5_creds,
}

impl Creds<'_> {
    fn get(&self) -> &ffi::krb5_creds {
        // SAFETY: non-null, owned by us until drop.
        unsafe { &*self.c }
    }
}

impl Drop for Creds<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by krb5_get_credentials with this context, freed once.
        unsafe { ffi::krb5_free_creds(self.ctx.0, self.c) }
    }
}

pub(crate) fn default_realm() -> Result<String, Error> {
    Context::new()?.default_realm()
}

/// The (instance, realm) pairs to try, in order, without duplicates.
pub(crate) fn candidates(
    cell: &str,
    explicit_realm: Option<&str>,
    user_realm: &str,
    cell_realm: impl FnOnce() -> String,
) -> Vec<(Option<String>, String)> {
    let mut v: Vec<(Option<String>, String)> = Vec::new();
    let cell_inst = Some(cell.to_string());
    match explicit_realm {
        Some(r) => {
            v.push((cell_inst, r.to_string()));
            v.push((None, r.to_string()));
        }
        None => {
            let cr = cell_realm();
            for c in [
                (cell_inst.clone(), user_realm.to_string()),
                (cell_inst, cr.clone()),
                (None, cr),
            ] {
                if !c.1.is_empty() && !v.contains(&c) {
                    v.push(c);
                }
            }
        }
    }
    v
}

/// The realm aklog deduces for a cell: `krb5_get_host_realm(cell)`, or the
/// upper-cased cell name.
fn cell_realm(ctx: &Context, cell: &str) -> String {
    ctx.host_realm(cell)
        .unwrap_or_else(|| cell.to_ascii_uppercase())
}

pub(crate) fn get_token(req: &Request) -> Result<AfsToken, Error> {
    if req.cell.is_empty() {
        return Err(Error::InvalidArgument("empty cell name".into()));
    }
    let ctx = Context::new()?;
    let cc_name = match req.ccache {
        Some(n) => n.to_string(),
        None => ctx.default_ccache_name(),
    };
    let no_creds = |code| Error::NoCredentials {
        ccache: cc_name.clone(),
        detail: ctx.message(code),
    };
    let cc = match ctx.ccache(req.ccache) {
        Ok(cc) => cc,
        Err(Error::Krb5 { code, .. }) if is_no_creds(code) => return Err(no_creds(code)),
        Err(e) => return Err(e),
    };
    let client = cc.principal().map_err(no_creds)?;
    let client_name = client.name()?;
    let user_realm = client.realm();

    let mut tried = Vec::new();
    let mut failures = Vec::new();
    for (inst, realm) in candidates(req.cell, req.realm, &user_realm, || {
        cell_realm(&ctx, req.cell)
    }) {
        let server = ctx.afs_principal(inst.as_deref(), &realm)?;
        let server_name = server.name()?;
        tried.push(server_name.clone());
        match cc.get_credentials(&client, &server) {
            Ok(creds) => return token_from(&ctx, &creds, client_name, server_name),
            Err(code) if is_no_creds(code) => return Err(no_creds(code)),
            // The client realm's KDC is unknown or unreachable: other principals
            // would fail the same way (aklog stops too).
            Err(code) if code == ffi::KRB5_KDC_UNREACH || code == ffi::KRB5_REALM_UNKNOWN => {
                return Err(ctx.err("krb5_get_credentials", code))
            }
            Err(code) => failures.push(format!("{server_name}: {}", ctx.message(code))),
        }
    }
    Err(Error::NoServicePrincipal {
        tried,
        detail: failures.join("; "),
    })
}

fn token_from(
    _ctx: &Context,
    creds: &Creds<'_>,
    client_principal: String,
    service_principal: String,
) -> Result<AfsToken, Error> {
    let c = creds.get();
    let enctype = c.keyblock.enctype;
    // SAFETY: keyblock.contents holds keyblock.length bytes and ticket.data
    // holds ticket.length bytes, both owned by `creds`.
    // The Kerberos session key is zeroed when dropped (libkrb5 zeroes its
    // own copy in krb5_free_creds).
    let (key, ticket) = unsafe {
        (
            Zeroizing::new(copy_bytes(
                c.keyblock.contents.cast::<c_char>(),
                c.keyblock.length,
            )),
            copy_bytes(c.ticket.data, c.ticket.length),
        )
    };
    let session_key = crate::derive_des_key(enctype, &key)?;
    // krb5_timestamp is a signed 32-bit field that libkrb5 treats as unsigned
    // (y2038-safe since 1.17).
    let ts = |t: ffi::krb5_timestamp| u64::from(t as u32);
    let start = if c.times.starttime != 0 {
        ts(c.times.starttime)
    } else {
        ts(c.times.authtime)
    };
    Ok(AfsToken {
        client_principal,
        service_principal,
        kvno: RXKAD_TKT_TYPE_KERBEROS_V5,
        ticket,
        session_key,
        enctype,
        start,
        end: ts(c.times.endtime),
    })
}

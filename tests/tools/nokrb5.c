/*
 * nokrb5.so: LD_PRELOAD shim for the stock /usr/bin/afsio (OpenAFS 1.8.9,
 * Debian 12).  Built by xtask/testcell/build-tools.sh into
 * target/testcell/bin (the env file's AFSIO_PRELOAD), together with a
 * wrapper script `afsio` there that preloads it; labexec puts that directory
 * first in PATH, so `labexec NETNS afsio ...` and `cargo xtask cell exec --
 * afsio ...` use it.  By hand: env LD_PRELOAD=$AFSIO_PRELOAD afsio ...
 *
 * Why: afsio's statically linked libafscp (_GetSecurityObject, run on every
 * cell lookup) was compiled against MIT's krb5.h but is linked with Heimdal's
 * libkrb5.so.26.  Its memset() of a krb5_creds covers MIT's 120 bytes;
 * Heimdal's struct is 144 bytes with .addresses at offset 120, so
 * krb5_free_cred_contents() frees uninitialised stack memory: afsio dies
 * with SIGSEGV or "free(): invalid pointer" depending only on incidental
 * things such as paths and the environment, even when anonymous.  That krb5
 * path never worked anyway (it accepts only DES session keys, so afsio always
 * ended up anonymous).  Failing krb5_init_context() sends libafscp straight
 * to its rxnull (anonymous) fallback without touching any krb5_creds.  The
 * same fix is linked into afscptool (-Wl,--wrap=krb5_init_context).
 */
int krb5_init_context(void *context);

int krb5_init_context(void *context)
{
    (void)context;
    return -1765328248;		/* KRB5_CONFIG_BADFORMAT */
}

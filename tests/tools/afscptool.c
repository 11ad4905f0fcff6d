/*
 * afscptool - tiny userspace AFS manipulator built on OpenAFS libafscp
 * (libopenafs-dev 1.8.x).  Needs no cache manager / kernel module.
 *
 *   afscptool [-k] [-clear] [-cell CELL] [-realm REALM] CMD ARGS...
 *
 *   -k      authenticate with the Kerberos 5 ccache ($KRB5CCNAME): gets
 *           afs/CELL@REALM and builds an rxkad-k5 token the way aklog does
 *           (tkt_DeriveDesKey on the session key).  Without -k: anonymous
 *           (rxnull).  NB: libafscp's own krb5 path only accepts DES
 *           session keys, which is why afsio is always anonymous with a
 *           modern KDC.
 *   -clear  rxkad_clear instead of rxkad_crypt.
 *
 * Paths are "/afs/CELL/..." (dynroot style: root.cell of CELL, .readonly
 * first), "/afs/.CELL/..." (RW root.cell), or "@VOLUME/..." (relative to
 * the RW volume VOLUME of -cell / ThisCell).  Mount points are followed.
 *
 * Commands:
 *   ls DIR | stat PATH | cat FILE | put FILE (stdin; create, or replace
 *   whole content in one StoreData64)
 *   append FILE (stdin) | mkdir DIR | rmdir DIR | rm FILE
 *   symlink PATH TARGET | mkmount PATH VOLUME [-rw]
 *   getacl PATH | setacl PATH NAME RIGHTS [NAME RIGHTS...]  (replaces ACL;
 *   RIGHTS = letters from rlidwka, or all / write (=rlidwk) / read (=rl) /
 *   none (drop the entry))
 */
#include <afs/param.h>
#include <afs/stds.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <krb5.h>
#include <rx/rx.h>
#include <rx/rxkad.h>
#include <afs/afsint.h>
#include <afs/afscp.h>
#include <afs/prs_fs.h>
#include <afs/voldefs.h>

static const char *prog = "afscptool";

/*
 * libafscp's own krb5 code (_GetSecurityObject, run by every
 * afscp_CellByName/afscp_DefaultCell) is compiled against MIT's krb5.h but
 * Debian links libafscp.a with Heimdal: its memset() of a krb5_creds covers
 * only MIT's struct (120 bytes; Heimdal's is 144, with .addresses at
 * offset 120), and Heimdal's krb5_free_cred_contents() then
 * frees uninitialised stack memory (SIGSEGV or "free(): invalid pointer",
 * depending on nothing more than the size of the environment).  It would
 * also only ever accept a DES session key.  So: build-tools.sh links with
 * -Wl,--wrap=krb5_init_context: every krb5_init_context call (libafscp's)
 * fails, libafscp goes straight to rxnull (afscp_AnonymousAuth) without
 * touching any krb5_creds, and krb5_auth() calls __real_krb5_init_context.
 */
krb5_error_code __real_krb5_init_context(krb5_context *ctx);
krb5_error_code __wrap_krb5_init_context(krb5_context *ctx);

krb5_error_code __wrap_krb5_init_context(krb5_context *ctx)
{
    (void)ctx;
    return KRB5_CONFIG_BADFORMAT;
}
static int use_krb5 = 0, clear_lvl = 0;
static const char *cellname = NULL, *realm = NULL;

static const char *errname(int code)
{
    static const char *vol[] = { "VSALVAGE", "VNOVNODE", "VNOVOL",
	"VVOLEXISTS", "VNOSERVICE", "VOFFLINE", "VONLINE", "VDISKFULL",
	"VOVERQUOTA", "VBUSY", "VMOVED" };
    if (code >= 101 && code <= 111)	/* AFS volume errors, not errno */
	return vol[code - 101];
    if (code >= 49733376 && code < 49733376 + 34)	/* unified AFS errors */
	return strerror(code - 49733376 + 1);	/* uae N = errno N+1 */
    if (code > 0 && code < 100)
	return strerror(code);
    return "see translate_et";
}

static void die(const char *what, int code)
{
    fprintf(stderr, "%s: %s failed: code %d (%s)\n", prog, what, code,
	    errname(code));
    exit(1);
}

/* Replace the cell's security object by an rxkad-k5 one from the ccache. */
static void krb5_auth(struct afscp_cell *cell)
{
    krb5_context ctx;
    krb5_ccache cc;
    krb5_creds match, *cred;
    struct ktc_encryptionKey k;
    struct rx_securityClass *sc;
    char rbuf[256];
    const char *r = realm;
    int code, i;

    if (r == NULL) {		/* default: upper-cased cell name */
	for (i = 0; cell->name[i] && i < (int)sizeof(rbuf) - 1; i++)
	    rbuf[i] = (cell->name[i] >= 'a' && cell->name[i] <= 'z')
		? cell->name[i] - 32 : cell->name[i];
	rbuf[i] = 0;
	r = rbuf;
    }
    code = __real_krb5_init_context(&ctx);	/* see __wrap_krb5_init_context */
    if (code)
	die("krb5_init_context", code);
    if ((code = krb5_cc_default(ctx, &cc)))
	die("krb5_cc_default", code);
    memset(&match, 0, sizeof(match));
    if ((code = krb5_cc_get_principal(ctx, cc, &match.client)))
	die("krb5_cc_get_principal (no ccache? kinit first)", code);
    if ((code = krb5_build_principal(ctx, &match.server, strlen(r), r,
				     "afs", cell->name, NULL)))
	die("krb5_build_principal", code);
    if ((code = krb5_get_credentials(ctx, 0, cc, &match, &cred)))
	die("krb5_get_credentials afs/CELL@REALM", code);
    /* Heimdal API (libafscp.a in Debian is built against Heimdal) */
    if (tkt_DeriveDesKey(cred->session.keytype, cred->session.keyvalue.data,
			 cred->session.keyvalue.length, &k))
	die("tkt_DeriveDesKey", EINVAL);
    sc = rxkad_NewClientSecurityObject(clear_lvl ? rxkad_clear : rxkad_crypt,
				       &k, RXKAD_TKT_TYPE_KERBEROS_V5,
				       cred->ticket.length, cred->ticket.data);
    if (sc == NULL)
	die("rxkad_NewClientSecurityObject", EINVAL);
    /* fileserver connections are created lazily with cell->security */
    cell->security = sc;
    cell->scindex = RX_SECIDX_KAD;
    krb5_free_creds(ctx, cred);
    krb5_free_cred_contents(ctx, &match);
    krb5_cc_close(ctx, cc);
    krb5_free_context(ctx);
}

static struct afscp_cell *thecell;

/* "/afs/CELL/..." or "@VOLUME/..." (path relative to the RW volume root) */
static struct afscp_venusfid *resolve(const char *path, int must)
{
    struct afscp_venusfid *f;
    if (path[0] == '@') {
	char *v = strdup(path + 1), *rest = strchr(v, '/');
	struct afscp_volume *vol;
	if (rest)
	    *rest++ = 0;
	vol = afscp_VolumeByName(thecell, v, RWVOL);
	if (vol == NULL) {
	    fprintf(stderr, "%s: no such volume %s\n", prog, v);
	    exit(1);
	}
	f = afscp_ResolvePathFromVol(vol, rest ? rest : "");
    } else
	f = afscp_ResolvePath(path);
    if (f == NULL && must) {
	fprintf(stderr, "%s: cannot resolve %s: afscp_errno %d (%s)\n", prog,
		path, afscp_errno, errname(afscp_errno));
	exit(1);
    }
    return f;
}

static void split(const char *path, char **dir, char **base)
{
    char *p = strdup(path), *s = strrchr(p, '/');
    if (s == NULL || s == p || (p[0] != '/' && p[0] != '@')) {
	fprintf(stderr, "%s: need an absolute /afs path: %s\n", prog, path);
	exit(2);
    }
    *s = 0;
    *dir = p;
    *base = s + 1;
}

static int rights_of(const char *s)
{
    int r = 0;
    if (strcmp(s, "none") == 0)
	return 0;
    if (strcmp(s, "all") == 0)
	return PRSFS_READ | PRSFS_WRITE | PRSFS_INSERT | PRSFS_LOOKUP |
	    PRSFS_DELETE | PRSFS_LOCK | PRSFS_ADMINISTER;
    if (strcmp(s, "write") == 0)
	s = "rlidwk";
    if (strcmp(s, "read") == 0)
	s = "rl";
    for (; *s; s++)
	switch (*s) {
	case 'r': r |= PRSFS_READ; break;
	case 'l': r |= PRSFS_LOOKUP; break;
	case 'i': r |= PRSFS_INSERT; break;
	case 'd': r |= PRSFS_DELETE; break;
	case 'w': r |= PRSFS_WRITE; break;
	case 'k': r |= PRSFS_LOCK; break;
	case 'a': r |= PRSFS_ADMINISTER; break;
	default: fprintf(stderr, "%s: bad right %c\n", prog, *s); exit(2);
	}
    return r;
}

static void write_from_stdin(struct afscp_venusfid *f, off_t pos)
{
    char buf[65536];
    ssize_t n, w;
    while ((n = read(0, buf, sizeof(buf))) > 0) {
	w = afscp_PWrite(f, buf, n, pos);
	if (w != n)
	    die("afscp_PWrite", afscp_errno);
	pos += n;
    }
}


/* Replace the whole file content with stdin in a single RXAFS_StoreData64
 * (offset 0, length n, new file length n): truncates, bumps DataVersion by
 * one and breaks other clients' callbacks.  libafscp's PWrite never shrinks
 * a file (new length = max(old, off+len)). */
static void store_whole(struct afscp_venusfid *f)
{
    size_t cap = 1 << 20, n = 0;
    ssize_t r;
    char *buf = malloc(cap);
    struct afscp_volume *vol;
    struct afscp_server *srv;
    struct rx_connection *c;
    struct rx_call *call;
    struct AFSStoreStatus sst;
    struct AFSFetchStatus fst;
    struct AFSVolSync vs;
    int code, code2;

    while ((r = read(0, buf + n, cap - n)) > 0) {
	n += r;
	if (n == cap)
	    buf = realloc(buf, cap *= 2);
    }
    vol = afscp_VolumeById(f->cell, f->fid.Volume);
    if (vol == NULL || vol->nservers < 1)
	die("afscp_VolumeById", afscp_errno);
    srv = afscp_ServerByIndex(vol->servers[0]);
    if (srv == NULL || (c = afscp_ServerConnection(srv, 0)) == NULL)
	die("afscp_ServerConnection", EHOSTUNREACH);
    memset(&sst, 0, sizeof(sst));
    call = rx_NewCall(c);
    code = StartRXAFS_StoreData64(call, &f->fid, &sst, 0, n, n);
    if (code == 0 && n > 0 && rx_Write(call, buf, n) != (int)n)
	code = rx_Error(call);
    if (code == 0)
	code = EndRXAFS_StoreData64(call, &fst, &vs);
    code2 = rx_EndCall(call, code);
    if (code == 0)
	code = code2;
    if (code)
	die("RXAFS_StoreData64", code);
    free(buf);
}

int main(int argc, char **argv)
{
    struct afscp_venusfid *f, *d, *nf;
    struct AFSStoreStatus sst;
    struct AFSFetchStatus fst;
    struct afscp_cell *cell;
    char *cmd, *dir, *base;
    int code;

    while (argc > 1 && argv[1][0] == '-') {
	if (!strcmp(argv[1], "-k"))
	    use_krb5 = 1;
	else if (!strcmp(argv[1], "-clear"))
	    clear_lvl = 1;
	else if (!strcmp(argv[1], "-cell") && argc > 2)
	    cellname = argv[2], argv++, argc--;
	else if (!strcmp(argv[1], "-realm") && argc > 2)
	    realm = argv[2], argv++, argc--;
	else
	    break;
	argv++, argc--;
    }
    if (argc < 3) {
	fprintf(stderr, "usage: %s [-k] [-clear] [-cell C] [-realm R] "
		"ls|stat|cat|put|append|mkdir|rmdir|rm|symlink|mkmount|touchmany|touchtree|"
		"getacl|setacl /afs/CELL/path ...\n", prog);
	return 2;
    }
    cmd = argv[1];
    if (afscp_Init(NULL))
	die("afscp_Init", -1);
    afscp_AnonymousAuth(1);
    afscp_SetDirMode(DIRMODE_DYNROOT);
    if (cellname == NULL && argv[2][0] == '@') {	/* default cell */
	if (afscp_DefaultCell() == NULL)
	    die("afscp_DefaultCell (no ThisCell?)", afscp_errno);
	cellname = afscp_DefaultCell()->name;
    }
    if (cellname == NULL) {	/* take the cell from /afs/CELL/... */
	const char *p = argv[2];
	static char cbuf[MAXCELLCHARS + 1];
	size_t n;
	if (strncmp(p, "/afs/", 5) != 0) {
	    fprintf(stderr, "%s: path must be /afs/CELL/... or @VOLUME/...\n",
		    prog);
	    return 2;
	}
	p += 5;
	if (*p == '.')
	    p++;
	n = strcspn(p, "/");
	if (n == 0 || n > MAXCELLCHARS) {
	    fprintf(stderr, "%s: no cell in path\n", prog);
	    return 2;
	}
	memcpy(cbuf, p, n);
	cbuf[n] = 0;
	cellname = cbuf;
    }
    cell = afscp_CellByName(cellname, realm);
    if (cell == NULL)
	die("afscp_CellByName (cell not in CellServDB?)", afscp_errno);
    afscp_SetDefaultCell(cellname);
    thecell = cell;
    if (use_krb5)
	krb5_auth(cell);

    memset(&sst, 0, sizeof(sst));
    if (!strcmp(cmd, "ls")) {
	struct afscp_dirstream *ds;
	struct afscp_dirent *de;
	f = resolve(argv[2], 1);
	if ((ds = afscp_OpenDir(f)) == NULL)
	    die("afscp_OpenDir", afscp_errno);
	while ((de = afscp_ReadDir(ds)) != NULL)
	    printf("%u.%u\t%s\n", de->vnode, de->unique, de->name);
	afscp_CloseDir(ds);
    } else if (!strcmp(cmd, "stat")) {
	f = resolve(argv[2], 1);
	if ((code = afscp_GetStatus(f, &fst)))
	    die("afscp_GetStatus", afscp_errno);
	printf("fid %u.%u.%u type %u mode %o length %u dv %u owner %u "
	       "mtime %u linkcount %u callerAccess 0x%x anyAccess 0x%x\n",
	       f->fid.Volume, f->fid.Vnode, f->fid.Unique, fst.FileType,
	       fst.UnixModeBits, fst.Length, fst.DataVersion, fst.Owner,
	       fst.ClientModTime, fst.LinkCount, fst.CallerAccess,
	       fst.AnonymousAccess);
    } else if (!strcmp(cmd, "cat")) {
	char buf[65536];
	off_t pos = 0;
	ssize_t n;
	f = resolve(argv[2], 1);
	while ((n = afscp_PRead(f, buf, sizeof(buf), pos)) > 0) {
	    fwrite(buf, 1, n, stdout);
	    pos += n;
	}
	if (n < 0)
	    die("afscp_PRead", afscp_errno);
    } else if (!strcmp(cmd, "put") || !strcmp(cmd, "append")) {
	int app = !strcmp(cmd, "append");
	f = resolve(argv[2], 0);
	if (f == NULL) {
	    if (app)
		die("append to missing file", ENOENT);
	    split(argv[2], &dir, &base);
	    d = resolve(dir, 1);
	    sst.Mask = AFS_SETMODE;
	    sst.UnixModeBits = 0644;
	    if (afscp_CreateFile(d, base, &sst, &f))
		die("afscp_CreateFile", afscp_errno);
	}
	if (app) {
	    if (afscp_GetStatus(f, &fst))
		die("afscp_GetStatus", afscp_errno);
	    write_from_stdin(f, fst.Length);
	} else {
	    store_whole(f);	/* one StoreData64 with new length = truncate */
	}
    } else if (!strcmp(cmd, "touchmany")) {
	/* touchmany DIR COUNT PREFIX: COUNT empty files PREFIX00000.. in DIR,
	 * in one process (big-directory tests without 2,000 tool starts) */
	int i, n;
	char nbuf[256];
	if (argc < 5)
	    die("touchmany DIR COUNT PREFIX", EINVAL);
	d = resolve(argv[2], 1);
	n = atoi(argv[3]);
	for (i = 0; i < n; i++) {
	    snprintf(nbuf, sizeof(nbuf), "%s%05d", argv[4], i);
	    memset(&sst, 0, sizeof(sst));
	    sst.Mask = AFS_SETMODE;
	    sst.UnixModeBits = 0644;
	    if (afscp_CreateFile(d, nbuf, &sst, &f))
		die("afscp_CreateFile", afscp_errno);
	}
    } else if (!strcmp(cmd, "touchtree")) {
	/* touchtree DIR NDIRS NFILES: directories d00.. in DIR, each with
	 * NFILES empty files e00000.., in one process (bench's find tree) */
	int i, j, nd, nfiles;
	char dbuf[64], nbuf[64];
	if (argc < 5)
	    die("touchtree DIR NDIRS NFILES", EINVAL);
	d = resolve(argv[2], 1);
	nd = atoi(argv[3]);
	nfiles = atoi(argv[4]);
	for (i = 0; i < nd; i++) {
	    snprintf(dbuf, sizeof(dbuf), "d%02d", i);
	    memset(&sst, 0, sizeof(sst));
	    sst.Mask = AFS_SETMODE;
	    sst.UnixModeBits = 0755;
	    if (afscp_MakeDir(d, dbuf, &sst, &nf))
		die("afscp_MakeDir", afscp_errno);
	    for (j = 0; j < nfiles; j++) {
		snprintf(nbuf, sizeof(nbuf), "e%05d", j);
		memset(&sst, 0, sizeof(sst));
		sst.Mask = AFS_SETMODE;
		sst.UnixModeBits = 0644;
		if (afscp_CreateFile(nf, nbuf, &sst, &f))
		    die("afscp_CreateFile", afscp_errno);
	    }
	}
    } else if (!strcmp(cmd, "mkdir")) {
	split(argv[2], &dir, &base);
	d = resolve(dir, 1);
	sst.Mask = AFS_SETMODE;
	sst.UnixModeBits = 0755;
	if (afscp_MakeDir(d, base, &sst, &nf))
	    die("afscp_MakeDir", afscp_errno);
    } else if (!strcmp(cmd, "rmdir") || !strcmp(cmd, "rm")) {
	split(argv[2], &dir, &base);
	d = resolve(dir, 1);
	code = !strcmp(cmd, "rm") ? afscp_RemoveFile(d, base)
	    : afscp_RemoveDir(d, base);
	if (code)
	    die(cmd, afscp_errno);
    } else if (!strcmp(cmd, "symlink") || !strcmp(cmd, "mkmount")) {
	char target[AFSNAMEMAX + 3];
	if (argc < 4) {
	    fprintf(stderr, "%s: %s PATH TARGET|VOLUME\n", prog, cmd);
	    return 2;
	}
	split(argv[2], &dir, &base);
	d = resolve(dir, 1);
	sst.Mask = AFS_SETMODE;
	if (!strcmp(cmd, "mkmount")) {
	    /* a mount point is a symlink, mode 0644, "#vol." or "%vol." */
	    snprintf(target, sizeof(target), "%c%s.",
		     (argc > 4 && !strcmp(argv[4], "-rw")) ? '%' : '#',
		     argv[3]);
	    sst.UnixModeBits = 0644;
	} else {
	    snprintf(target, sizeof(target), "%s", argv[3]);
	    sst.UnixModeBits = 0755;
	}
	if (afscp_Symlink(d, base, target, &sst))
	    die("afscp_Symlink", afscp_errno);
    } else if (!strcmp(cmd, "getacl")) {
	struct AFSOpaque acl;
	char buf[AFSOPAQUEMAX + 1];
	f = resolve(argv[2], 1);
	memset(buf, 0, sizeof(buf));
	acl.AFSOpaque_val = buf;
	acl.AFSOpaque_len = AFSOPAQUEMAX;
	if (afscp_FetchACL(f, &acl))
	    die("afscp_FetchACL", afscp_errno);
	fputs(buf, stdout);
    } else if (!strcmp(cmd, "setacl")) {
	struct AFSOpaque acl;
	char buf[AFSOPAQUEMAX + 16], ent[AFSOPAQUEMAX];
	int i, n = 0;
	f = resolve(argv[2], 1);
	ent[0] = 0;
	for (i = 3; i + 1 < argc; i += 2) {
	    int r = rights_of(argv[i + 1]);
	    if (r == 0)
		continue;
	    snprintf(ent + strlen(ent), sizeof(ent) - strlen(ent), "%s\t%d\n",
		     argv[i], r);
	    n++;
	}
	snprintf(buf, sizeof(buf), "%d\n0\n%s", n, ent);
	acl.AFSOpaque_val = buf;
	acl.AFSOpaque_len = strlen(buf) + 1;
	if (afscp_StoreACL(f, &acl))
	    die("afscp_StoreACL", afscp_errno);
    } else {
	fprintf(stderr, "%s: unknown command %s\n", prog, cmd);
	return 2;
    }
    afscp_Finalize();
    return 0;
}

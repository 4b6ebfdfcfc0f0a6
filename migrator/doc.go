// Package migrator moves a running pagecast virtual machine to another
// monitor over TCP: the source engine (pre-copy rounds whose page choice is
// a Policy: plain pre-copy after Clark et al., or predictive deferral after
// Wei et al.), the receiver that rebuilds the machine on the destination,
// the framed, versioned, checksummed wire protocol between them, a token
// bucket that makes loopback behave like a slower link, and the QMP
// commands (migrate, query-migrate, migrate-set-parameters, migrate_cancel)
// with QEMU's names and reply shapes.
//
// Safety first: the destination only starts the guest after it has checked
// its memory against the stopped source's checksums and the source has
// answered with a commit; until then any failure — a refused handshake, a
// dead destination, a cut link, a corrupt record — leaves (or puts) the
// source running and reports the migration failed.
package migrator

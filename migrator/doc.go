// Package migrator moves a running virtual machine to another monitor over
// TCP: the source engine (pre-copy rounds whose page choice is a policy:
// plain pre-copy after Clark et al., predictive deferral after Wei et al.,
// CPU throttling after Jin et al. 2011, three-stage copy after Song et al.,
// each optionally with MECOM compression, and pre-copy that switches to
// post-copy when its rounds stop converging), the receiver that rebuilds the
// machine on the destination, the framed, versioned, checksummed wire
// protocol between them, a token bucket that makes loopback behave like a
// slower link (Limiter; Relay puts one in front of any migration's
// destination, QEMU's own included), and the QMP commands (migrate,
// query-migrate, migrate-set-parameters, query-migrate-parameters,
// migrate_cancel, migrate-pause, migrate-start-postcopy) with QEMU's names
// and reply shapes; PauseWatch times the guest's own pause across a QEMU
// migration from its STOP and RESUME events.
//
// The engine knows a virtual machine only through the interfaces in
// guest.go: Guest on the source (memory, a dirty log, pause and resume, a
// CPU share, its state as opaque bytes), Destination on the receiving side
// (memory, restore, start). pagecast's own monitor (vmm.VM.Migratable), a
// QEMU whose RAM is shared memory, and the simulator's trace-driven guest
// implement them; its timing goes through a Clock, so the same engine runs
// live and on a virtual clock.
//
// Safety first: the destination only starts the guest once every page has
// arrived, it has restored the guest's state and the source has answered
// with a commit; until then any failure — a refused handshake, a dead
// destination, a cut link, a corrupt record, a state the destination cannot
// restore — leaves (or puts) the source running and reports the migration
// failed. The stopped source then sums all the memory it holds and sends
// the sums; the destination compares them with those of the memory its
// guest started with, combined from each page's kept as it arrived, so a
// write the dirty log missed is caught without the sums costing downtime:
// on a difference the destination stops its guest and the source runs it
// on from where it paused (audit).
// Where memory is a shared file (MemoryFile) its holes, memory never
// written, are zero pages that neither end reads, as reading would
// allocate them.
package migrator

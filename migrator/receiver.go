package migrator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// ReceiveConfig tunes the destination side.
type ReceiveConfig struct {
	// Reconnect, if set, waits for the source to connect again: TSMC's
	// stage 3 uses it to resume after a lost link. Without it a lost link
	// in stage 3 ends the migration with the guest's missing pages gone.
	Reconnect func(ctx context.Context) (net.Conn, error)
	// Accepted, if set, is called once the source's handshake has been
	// accepted: a Doorman is then Busy.
	Accepted func()
	// Status, if set, is told the incoming migration's status as QEMU's
	// destination says it in query-migrate: active once accepted,
	// postcopy-active once the guest runs here before all its pages
	// came, postcopy-paused while its source is lost (the guest waits
	// on its missing pages; walk 148: nothing said so but a log line).
	Status func(status string)
	// Pause, if set, breaks the link to the source when it is sent on
	// while the guest runs here in post-copy (QMP migrate-pause): the
	// migration turns postcopy-paused and, with Reconnect, waits for the
	// source to come back. Elsewhere a send is not read.
	Pause       <-chan struct{}
	TLS         *tls.Config   // server side of mutual TLS; nil: plain TCP
	IdleTimeout time.Duration // a source that sends nothing this long is gone; default 30 s
	Log         *slog.Logger
	Clock       Clock // times Received.Elapsed; default WallClock
}

// Received describes an incoming migration that completed.
type Received struct {
	Rounds    int
	Pages     uint64 // whole pages received
	ZeroPages uint64 // pages received as zero runs
	Bytes     uint64 // bytes read from the wire
	Elapsed   time.Duration
	Mode      string
	Pulled    uint64 // TSMC: dirty pages the guest touched before they came, fetched on demand
	Pushed    uint64 // TSMC: dirty pages filled in stage 3 (pulled ones included)
	// DroppedEarly is how many of the dirty pages stage 1 named (TSMC),
	// which were dropped then, not in the pause.
	DroppedEarly uint64
	// Waited is the time the guest's vCPUs waited for missing pages in
	// stage 3 (TSMC), summed over the vCPUs; the source is told it.
	Waited   time.Duration
	Verified bool // the memory matched the source's checksums
	// HeldPaused says the guest is held paused here, as it was on the
	// source when it left (its user stopped it during the migration).
	HeldPaused bool
}

// Listen opens the destination's socket for a migration URI (tcp:HOST:PORT),
// wrapped in TLS when tlsConfig is set.
func Listen(uri string, tlsConfig *tls.Config) (net.Listener, error) {
	addr, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the incoming migration: %w", err)
	}
	if tlsConfig != nil {
		l = tls.NewListener(l, tlsConfig)
	}
	return l, nil
}

// ReceiveOnce takes the first connection on l, closes l, and receives a
// migration into d from it in the background; Receive's outcome (nil or
// its error, or Accept's) arrives on the channel returned. Tests and
// benchmarks migrate on loopback with it.
func ReceiveOnce(l net.Listener, d Destination, cfg ReceiveConfig) <-chan error {
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		l.Close()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		_, err = Receive(context.Background(), conn, d, cfg)
		done <- err
	}()
	return done
}

// Receive rebuilds d, created but not started, from the migration stream on
// conn. Once all memory has arrived and checked out against the source's
// checksums it restores the guest's state (d.Restore) and tells the source;
// it starts the guest (d.Start) once the source has committed. On any error
// the guest is left unstarted and the source is told why (it then keeps the
// guest).
func Receive(ctx context.Context, conn net.Conn, d Destination, cfg ReceiveConfig) (Received, error) {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = WallClock{}
	}
	if ok, st := d.Waiting(); !ok {
		return Received{}, fmt.Errorf("incoming migration: virtual machine is %s, not waiting", st)
	}
	memory := d.MemoryBytes()
	if memory == 0 || memory%PageSize != 0 || uint64(len(d.Memory())) != memory {
		return Received{}, fmt.Errorf("incoming migration: guest memory of %d bytes (%d mapped) is not a whole number of %d-byte pages", memory, len(d.Memory()), PageSize)
	}
	// Reads end at once when the receive is stopped (the VM told to
	// quit, SIGTERM) or the VM goes (a QEMU killed, below), and the
	// source is told why before the connection closes. The link's reads
	// check reads too, so a deadline they set cannot undo the stop.
	reads, stopReads := context.WithCancel(ctx)
	defer stopReads()
	unblock := context.AfterFunc(reads, func() { conn.SetReadDeadline(time.Now()) })
	defer unblock()
	defer conn.Close()
	if tc, ok := tlsConn(conn); ok {
		// The handshake on its own, so that its failure is named as one
		// rather than as the first record's.
		hctx, cancel := context.WithTimeout(ctx, min(cfg.IdleTimeout, helloWait))
		err := tc.HandshakeContext(hctx)
		cancel()
		if errors.Is(err, io.EOF) {
			return Received{}, fmt.Errorf("incoming migration: TLS handshake with the source: %w (%w)", ErrQuietPeer, ErrNoHandshake)
		}
		if err != nil {
			return Received{}, fmt.Errorf("incoming migration: TLS handshake with the source: %w (%w)", tlsHint(err, "source"), ErrNoHandshake)
		}
	}
	lc := &linkConn{Conn: conn, ctx: reads, limit: NewLimiter(0), idle: cfg.IdleTimeout}
	rc := &receiver{d: d, mem: d.Memory(), pages: memory / PageSize, link: lc,
		w: NewWriter(lc), r: NewReader(lc), log: cfg.Log.With("component", "incoming"),
		ctx: ctx, cfg: cfg}
	start := cfg.Clock.Now()
	// A VM that goes while pages come in stops the reads, so that the
	// source hears why now rather than at the round's end, when the
	// receiver next asks the VM.
	gone, unwatch := WatchGone(d, func(error) { stopReads() })
	err := rc.runGuarded()
	unwatch()
	for _, c := range rc.conns {
		c.Close()
	}
	// A read the stop ended fails on its deadline, or on reads' check.
	readStopped := reads.Err() != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.Canceled))
	if gerr := gone(); gerr != nil && readStopped && ctx.Err() == nil {
		// The watch stopped the stream because the VM went. (Where
		// something else failed first, as QEMU refusing the state and
		// exiting, that error says more.)
		err = gerr
	} else if errors.Is(err, os.ErrDeadlineExceeded) && !readStopped && !errors.Is(err, ErrNoHandshake) {
		// The source's own wait is shorter (10 s against 30): it has
		// given up already, and says why on its side.
		err = fmt.Errorf("%w (nothing came from the source for %v: the source or the network stalled, and the source has given up)", err, cfg.IdleTimeout)
	}
	partly := "" // how much had come of a stream that broke
	if err != nil && !errors.Is(err, ErrNoHandshake) && ctx.Err() == nil && (rc.seen == nil || rc.seen.Count() == 0) {
		// Accepted, but gone before a page came (a source that gave up
		// on its handshake while another peer held this one, then
		// aborted): the guest is as it was, and can wait again.
		err = fmt.Errorf("%w (%w)", err, ErrNothingReceived)
	} else if err != nil && ctx.Err() == nil && rc.seen != nil && !errors.Is(err, ErrNoHandshake) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded)) {
		// The stream broke after pages came: said, as the case before
		// is (walk 107: a destination ended on one page and a hang-up
		// saying only "EOF"). Not in the abort below, which the source,
		// gone or stalled, would not take in.
		// Not "a new one needs a destination started afresh": a new
		// receiver on the same QEMU took the next, memory equal (walk
		// 114), as every migration writes all of it, holes as zeros.
		partly = fmt.Sprintf(" (%d of the guest's %d pages had arrived; this receiver takes no other migration: to migrate again, start a new receiver "+
			"(pagecast receive, which may use the same destination QEMU if it still waits, as a migration writes all of the guest's memory and checks it; or vm run --incoming, which starts a QEMU of its own))", rc.seen.Count(), rc.pages)
	}
	if err != nil {
		var refused *refusal
		var told *toldSource
		if !errors.As(err, &refused) && !errors.Is(err, errSourceAborted) && !errors.As(err, &told) {
			// Best effort: the source may be gone already.
			reason := err.Error()
			if ctx.Err() != nil {
				reason = "the destination was stopped (its VM told to quit, or the process to end) during the incoming migration"
			}
			rc.link.idle = abortWait                // the link rc.w writes on: a reconnection replaces lc
			if rc.w.Text(RecAbort, reason) == nil { // the Writer cuts long reasons
				rc.w.Flush()
			}
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return Received{}, fmt.Errorf("incoming migration: %w%s", err, partly)
	}
	rounds := rc.rounds
	if rc.dirty != nil {
		rounds++ // the post-copy pass, which the source counts as a round
	}
	return Received{Rounds: rounds, Pages: rc.normal, ZeroPages: rc.zero, Bytes: rc.read + rc.r.Bytes(),
		Elapsed: cfg.Clock.Now().Sub(start), Mode: rc.mode, Pulled: rc.pulled, Pushed: rc.pushed, DroppedEarly: rc.droppedEarly, Waited: rc.waited, Verified: rc.verified, HeldPaused: rc.heldPaused}, nil
}

// helloWait bounds the wait for a connection's TLS handshake and hello.
const helloWait = 5 * time.Second

// ErrNothingReceived marks a Receive that accepted a source which then went
// (aborted, hung up) before any page arrived: the destination's guest is
// untouched, so it can wait for another source.
var ErrNothingReceived = errors.New("no page had arrived: the guest is as it was")

type refusal struct{ reason error }

func (r *refusal) Error() string { return "refused the source: " + r.reason.Error() }

// Is makes a refusal an ErrNoHandshake.
func (r *refusal) Is(target error) bool { return target == ErrNoHandshake }

// ErrNoHandshake marks a Receive that ended before any migration began: the
// peer sent no valid handshake (a port scanner, a client that is not
// pagecast, a TLS failure) or one that was refused. The destination is
// untouched and may wait for the next connection.
var ErrNoHandshake = errors.New("no migration began")

var errSourceAborted = errors.New("the source aborted the migration")

// ErrQuietPeer marks a connection closed before it sent a byte (or, under
// TLS, before its handshake): a port probe, such as a check that the
// destination listens, or a health check.
var ErrQuietPeer = errors.New("the peer hung up without a word (a port probe)")

type receiver struct {
	link  *linkConn  // the connection w and r use
	conns []net.Conn // connections after the first (post-copy recovery)
	read  uint64     // bytes read on connections the link no longer is (a repeated commit's)
	ctx   context.Context
	cfg   ReceiveConfig
	d     Destination
	hold  bool // the source's commit said to hold the guest paused: its user had paused it there
	// heldPaused: the guest was held paused (hold, and the Destination
	// can: PausedStarter).
	heldPaused bool
	mem        []byte
	pages      uint64
	w          *Writer
	r          *Reader
	log        *slog.Logger

	seen         *bitmap.Bitmap
	state        stateBuffer // the guest's state (Guest.SaveState)
	digest       *Digest     // TSMC: the source's checksums, after stage 3's pages
	rounds       int
	normal, zero uint64
	mode         string
	sums         *pageSums      // each page's checksum as it arrives
	dirty        *bitmap.Bitmap // TSMC: the stage-2 dirty bitmap
	// later: TSMC, the pages stage 1 named for stage 3 (RecLater) and
	// punched out of memory then, not written since; noEarlyDrop once
	// punching them failed (the drop at stage 2 does the rest).
	later        *bitmap.Bitmap
	noEarlyDrop  bool
	droppedEarly uint64        // TSMC: dirty pages at stage 2 that were dropped in stage 1
	dirtyWords   bitmapChunks  // how much of dirty has arrived
	pulled       uint64        // TSMC: pages asked for because the guest touched them
	pushed       uint64        // TSMC: pages filled in stage 3
	waited       time.Duration // TSMC: the guest's wait for missing pages in stage 3
	verdictAt    time.Time     // when the verdict went, which RecStarted counts from
	verified     bool          // the memory matched the source's checksums
	noPopulate   bool          // MADV_POPULATE_WRITE failed: pages fault in as written
}

// hello is what the handshake checks the source's hello against.
func (rc *receiver) hello() Hello {
	id := rc.d.Identity()
	return Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: rc.d.MemoryBytes(),
		VCPUs: uint32(id.VCPUs), Image: id.Image}
}

// checkHello is h.Check against this destination, which also takes the
// images its Identity's Takes lists, and says why it refuses those its
// Refuses names.
func (rc *receiver) checkHello(h Hello) error {
	id, local := rc.d.Identity(), rc.hello()
	why, refused := id.Refuses[h.Image]
	if refused || slices.Contains(id.Takes, h.Image) {
		h.Image = local.Image
	}
	err := h.Check(local)
	switch {
	case refused && err != nil:
		return fmt.Errorf("%s; %w", why, err)
	case refused:
		return errors.New(why)
	}
	return err
}

// runGuarded is run, a fault writing the guest's memory turned into an
// error: a page of guest RAM in a file its file system has no room for
// raises SIGBUS when written, which crashed the destination with a Go
// stack dump (a walk's 64 MiB guest in a 20 MiB /dev/shm).
func (rc *receiver) runGuarded() error {
	return guardFaults(rc.mem, rc.run, rc.memoryRoom)
}

// guardFaults runs fn on this goroutine, a memory fault in it (SIGBUS, or
// SIGSEGV) an error: which page of mem it hit, and room's word on why.
func guardFaults(mem []byte, fn func() error, room func() string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// Only a fault in the guest's memory: any other is a bug, and
		// goes on as the crash it is (review 75).
		f, ok := r.(interface{ Addr() uintptr })
		base := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
		if !ok || f.Addr() < base || f.Addr() >= base+uintptr(len(mem)) {
			panic(r)
		}
		err = fmt.Errorf("guest page %#x could not be had (a fault, SIGBUS): %s", (f.Addr()-base)/PageSize, room())
	}()
	return fn()
}

// memoryRoom says what may have left no room for the guest's memory: the
// file system of the file it is in, where the destination says which.
func (rc *receiver) memoryRoom() string {
	var fs unix.Statfs_t
	// A file system of no blocks has no size limit (a memfd's).
	if fd := memoryFD(rc.d); fd >= 0 && unix.Fstatfs(fd, &fs) == nil && fs.Blocks > 0 {
		return fmt.Sprintf("the file system holding the guest's RAM has %s free; the guest needs up to %s there",
			wireSize(fs.Bavail*uint64(fs.Bsize)), wireSize(uint64(len(rc.mem))))
	}
	return "the memory holding the guest's RAM could not be allocated (memory short, or its file cut short)"
}

func (rc *receiver) run() error {
	// A peer that connects and says nothing holds the wait only so long:
	// less than the source's own wait for the answer (IdleTimeout, 10 s),
	// so that a source queued behind it is still there when its turn comes.
	// (Behind a Doorman, which reads every handshake as it comes, no source
	// queues behind a silent peer.)
	idle := rc.link.idle
	rc.link.idle = min(idle, helloWait)
	rec, err := rc.r.Next()
	rc.link.idle = idle
	if errors.Is(err, io.EOF) && rc.r.Bytes() == 0 {
		return fmt.Errorf("read the handshake: %w (%w)", ErrQuietPeer, ErrNoHandshake)
	}
	if err != nil {
		return fmt.Errorf("read the handshake: %w (%w)", err, ErrNoHandshake)
	}
	if rec.Type != RecHello {
		return fmt.Errorf("the stream starts with a %s record, not a handshake: %w (%w)", rec.Type, ErrMalformed, ErrNoHandshake)
	}
	err = rc.checkHello(rec.Hello)
	if err == nil {
		if rec.Hello.Mode == resumeMode {
			// A post-copy source reconnecting finds the destination
			// that ran its guest (tsmc.go's resume), never a fresh one.
			err = errors.New("a post-copy source reconnecting, but this destination is a fresh one, not the one that ran the guest (restarted, or another): it has none of the guest's pages")
		} else if strings.HasPrefix(rec.Hello.Mode, commitMode+":") {
			err = errors.New("a source repeating its commit, but this destination is a fresh one, not the one its migration went to (restarted, or another): it has none of the guest's pages")
		} else if _, perr := parseMode(rec.Hello.Mode); perr != nil && rec.Hello.Mode != "" { // none said: the stream says
			err = fmt.Errorf("the source's %w", perr)
		}
	}
	if np, ok := rc.d.(NoPostcopy); ok && err == nil && NeedsPostcopy(rec.Hello.Mode) {
		if why := np.NoPostcopy(); why != "" {
			err = fmt.Errorf("this destination cannot run %s's post-copy (%s's stage 3): %s", rec.Hello.Mode, ModeTSMC, why)
		}
	}
	if err != nil {
		if werr := rc.w.Text(RecRefuse, err.Error()); werr == nil {
			rc.w.Flush()
		}
		return &refusal{err}
	}
	rc.mode = rec.Hello.Mode
	if err := rc.w.Text(RecAccept, ""); err != nil {
		return err
	}
	if err := rc.w.Flush(); err != nil {
		return fmt.Errorf("accept the source: %w", err)
	}
	if rc.cfg.Accepted != nil {
		rc.cfg.Accepted()
	}
	rc.status(StatusActive)
	rc.r.SetLimits(rc.pages)
	rc.seen = bitmap.New(rc.pages)
	rc.sums = newPageSums(rc.mem) // a mode with post-copy may end in a stop-and-copy too
	rc.log.Info("incoming migration accepted", "mode", rc.mode)
	if p, ok := rc.d.(RestorePreparer); ok {
		if err := p.PrepareRestore(); err != nil {
			rc.log.Warn("could not get ready for the guest's state; the switch-over will", "err", err)
		}
	}

	for {
		rec, err := rc.r.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A source that fails or is cancelled mid-record hangs up
			// without a word: it cannot end a record half sent.
			return fmt.Errorf("read the migration stream: the source hung up (cancelled, failed or gone, or the link broke): %w", err)
		}
		if err != nil {
			return fmt.Errorf("read the migration stream: %w", err)
		}
		switch rec.Type {
		case RecPages:
			if err := rc.populate(rec.GFNs); err != nil {
				return err
			}
			for i, gfn := range rec.GFNs {
				copy(rc.mem[gfn*PageSize:(gfn+1)*PageSize], rec.Data[i*PageSize:(i+1)*PageSize])
				rc.wrote(gfn)
			}
		case RecCompressed:
			gfns := rec.GFNs
			if err := rc.populate(gfns); err != nil {
				return err
			}
			err := mecom.Decode(rec.Coded, len(gfns), func(i int, data []byte) {
				copy(rc.mem[gfns[i]*PageSize:(gfns[i]+1)*PageSize], data)
				rc.wrote(gfns[i])
			})
			if err != nil {
				return fmt.Errorf("compressed pages %d…%d: %w", gfns[0], gfns[len(gfns)-1], err)
			}
		case RecZero:
			zeroPages(rc.mem[rec.First*PageSize : (rec.First+rec.Count)*PageSize])
			for gfn := rec.First; gfn < rec.First+rec.Count; gfn++ {
				rc.arrived(gfn, &rc.zero)
			}
			rc.sums.zeroed(rec.First, rec.Count)
		case RecEndRound:
			// The source's own count: a round cut short once what was
			// pending fit the downtime limit ends without this record,
			// and the stop-and-copy after it is the next round.
			// Each a later one, and at most the round cap's limit and
			// the stop-and-copy (walk 148: a source's 0xffffffff was
			// taken, and the log said rounds=4294967297).
			if int64(rec.Round) <= int64(rc.rounds) || rec.Round > MaxRoundsLimit+2 {
				return fmt.Errorf("end of round %d after round %d (rounds count up, to at most %d): %w", rec.Round, rc.rounds, MaxRoundsLimit+2, ErrMalformed)
			}
			rc.rounds = int(rec.Round)
			// A VM that has gone meanwhile (its QEMU killed) can never
			// take the guest: say so now, not after the source has
			// paused it for a stop-and-copy.
			if ok, st := rc.d.Waiting(); !ok {
				return fmt.Errorf("after round %d the virtual machine is no longer waiting for the migration: %s", rc.rounds, st)
			}
		case RecState:
			if err := rc.state.add(rec.State); err != nil {
				return err
			}
		case RecDigest:
			return fmt.Errorf("memory checksums before the end: they follow the commit: %w", ErrMalformed)
		case RecLater:
			if !NeedsPostcopy(rc.mode) || rc.dirty != nil {
				return fmt.Errorf("pages named for stage 3 from a source whose mode (%q) has no post-copy, or after its dirty bitmap: %w", rc.mode, ErrMalformed)
			}
			rc.dropEarly(rec.GFNs)
		case RecSync:
			// Every record before it is done (the pages RecLater named
			// dropped): the source pauses its guest once it hears so.
			if err := rc.w.Sync(); err != nil {
				return fmt.Errorf("answer the source's sync: %w", err)
			}
			if err := rc.w.Flush(); err != nil {
				return fmt.Errorf("answer the source's sync: %w", err)
			}
		case RecBitmap:
			if !NeedsPostcopy(rc.mode) {
				// Only a mode with post-copy ends with one: the destination
				// checked at the handshake that it can run that.
				return fmt.Errorf("a dirty bitmap from a source whose mode (%q) has no post-copy: %w", rc.mode, ErrMalformed)
			}
			if rc.dirty == nil {
				rc.dirty = bitmap.New(rc.pages)
			}
			if err := rc.dirtyWords.add(rc.dirty.Words(), rec); err != nil {
				return err
			}
		case RecEnd:
			if rc.dirty != nil {
				if rc.dirtyWords.have != uint64(len(rc.dirty.Words())) {
					return fmt.Errorf("the source ended stage 2 with %d of the dirty bitmap's %d words sent: %w",
						rc.dirtyWords.have, len(rc.dirty.Words()), ErrMalformed)
				}
				return rc.receiveTSMC(rc.dirty)
			}
			return rc.finish()
		case RecAbort:
			return fmt.Errorf("%w: %s", errSourceAborted, rec.Text)
		default:
			return fmt.Errorf("unexpected %s record from the source: %w", rec.Type, ErrMalformed)
		}
	}
}

// dropEarly punches gfns, which stage 3 will bring, out of guest memory
// now, while the guest runs on the source: at stage 2 they are only
// marked missing (prepareStage3). Where that fails, stage 2 drops them.
func (rc *receiver) dropEarly(gfns []uint64) {
	if rc.noEarlyDrop {
		return
	}
	if rc.later == nil {
		rc.later = bitmap.New(rc.pages)
	}
	sorted := slices.Sorted(slices.Values(gfns))
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] <= sorted[j-1]+1 {
			j++
		}
		first, end := sorted[i], sorted[j-1]+1
		if err := unix.Madvise(rc.mem[first*PageSize:end*PageSize], unix.MADV_REMOVE); err != nil {
			rc.log.Warn("stage 1: could not drop the pages stage 3 brings (MADV_REMOVE); they are dropped at the switch-over", "err", err)
			rc.noEarlyDrop = true
			return
		}
		for g := first; g < end; g++ {
			rc.later.Set(g)
		}
		i = j
	}
}

// status tells cfg.Status the migration's status, where set.
func (rc *receiver) status(st string) {
	if rc.cfg.Status != nil {
		rc.cfg.Status(st)
	}
}

// wrote records page gfn, just written with data, as received.
func (rc *receiver) wrote(gfn uint64) {
	rc.sums.wrote(gfn)
	rc.arrived(gfn, &rc.normal)
}

// arrived records page gfn as received, counted in count. Once TSMC's
// dirty bitmap has come (stage 2) a page is a dirty one sent ahead of stage
// 3, so it is no longer to be fetched, and counts as pushed.
func (rc *receiver) arrived(gfn uint64, count *uint64) {
	rc.seen.Set(gfn)
	if rc.later != nil {
		rc.later.Unset(gfn) // here again: it is dropped at stage 2, if dirty
	}
	if rc.dirty != nil {
		rc.dirty.Unset(gfn)
		count = &rc.pushed
	}
	*count++
}

// finish checks that the copy is whole and restores the guest's state,
// tells the source, starts the guest on its commit, and then checks the
// memory it started with against the source's checksums (audit).
func (rc *receiver) finish() error {
	end := rc.cfg.Clock.Now() // of the stream's switch-over part
	problem := rc.complete(nil)
	if problem == nil {
		problem = rc.restore()
	}
	restored := rc.cfg.Clock.Now()
	if err := rc.verdict(problem); err != nil {
		return err
	}
	committed := rc.cfg.Clock.Now()
	if err := rc.start(); err != nil {
		return err
	}
	rc.started()
	rc.log.Debug("switch-over", "state-bytes", len(rc.state.data), "restore", restored.Sub(end),
		"commit-wait", committed.Sub(restored), "start", rc.cfg.Clock.Now().Sub(committed))
	if err := rc.audit(); err != nil {
		return err
	}
	_, st := rc.d.Waiting() // running, or paused where it was stopped while it waited
	rc.log.Info("incoming migration complete", "guest", st, "rounds", rc.rounds, "pages", rc.normal, "zero-pages", rc.zero)
	return nil
}

// started tells the source its guest runs (RecStarted), since how long
// after the verdict went: the pause ends here, and the source counts its
// downtime to this and sums its memory after it. A link lost now is the
// next read's to find.
func (rc *receiver) started() {
	now := rc.cfg.Clock.Now()
	err := rc.w.Started(now.Sub(rc.verdictAt))
	if err == nil {
		err = rc.w.Flush()
	}
	if err != nil {
		rc.log.Warn("tell the source the guest runs", "err", err)
	}
}

// start runs the guest, once the source has committed, or holds it paused
// if the source's was (hold).
func (rc *receiver) start() error {
	if !rc.hold {
		if err := rc.d.Start(); err != nil {
			return fmt.Errorf("start the guest: %w", err)
		}
		return nil
	}
	ps, ok := rc.d.(PausedStarter)
	if !ok {
		rc.log.Warn("the guest was paused on the source when it came, but this destination cannot hold it paused: it runs here")
		if err := rc.d.Start(); err != nil {
			return fmt.Errorf("start the guest: %w", err)
		}
		return nil
	}
	if err := ps.StartPaused(); err != nil {
		return fmt.Errorf("take the guest in paused: %w", err)
	}
	rc.heldPaused = true
	rc.log.Info("the guest was paused on the source when it came, and is held paused here, as it was there (QMP cont runs it)")
	return nil
}

// auditWait is how long the destination waits for the source's checksums
// after the commit: the source sums all the memory its guest holds, some
// 10 GB a second on two cores.
const auditWait = 10 * time.Minute

// awaitChecksums lets the link idle for as long as the source may take to
// sum its paused memory, which is all it has left to send.
func (rc *receiver) awaitChecksums() { rc.link.idle = max(rc.link.idle, auditWait) }

// audit reads the source's checksums of its paused memory and compares
// them with those of the memory the guest was started with, which each
// page's checksum, kept as it arrived, still gives (pageSums) while the
// guest runs on. If they differ the guest is stopped and the source told,
// and it runs the guest on from its own copy; if it cannot be stopped the
// source is told that instead, and keeps its copy paused. If the checksums
// do not come the guest runs on, unchecked.
func (rc *receiver) audit() error {
	rc.awaitChecksums()
	rec, err := rc.r.Next()
	if err != nil {
		rc.log.Warn("the source's memory checksums did not come; the guest runs on, unchecked", "err", err)
		return nil
	}
	if rec.Type != RecDigest {
		rc.log.Warn("the source sent a record other than its memory checksums; the guest runs on, unchecked", "record", rec.Type.String())
		return nil
	}
	problem := errors.New("no checksums of the memory the guest started with")
	if local, ok := rc.sums.digest(rec.Digest.ChunkBytes); ok {
		problem = rec.Digest.Compare(local)
	}
	if problem == nil {
		rc.verified = true
		if err := rc.w.Verified(true, ""); err == nil {
			rc.w.Flush()
		}
		return nil
	}
	return rc.stopGuest(fmt.Errorf("verify memory after the switch-over: %w", problem))
}

// stopGuest stops the running guest for problem and tells the source: a
// verdict (the guest runs on at the source), or, if the guest would not
// stop, an abort (the source keeps its copy paused).
func (rc *receiver) stopGuest(problem error) error {
	if err := rc.d.Stop(); err != nil {
		err = fmt.Errorf("%w; stop the guest: %w", problem, err)
		if rc.w.Text(RecAbort, err.Error()) == nil {
			rc.w.Flush()
		}
		return &toldSource{err}
	}
	if rc.w.Verified(false, problem.Error()) == nil {
		rc.w.Flush()
	}
	return &toldSource{fmt.Errorf("%w; the guest is stopped here and runs on at the source", problem)}
}

// toldSource is an error the source has been told of already.
type toldSource struct{ err error }

func (t *toldSource) Error() string { return t.err.Error() }
func (t *toldSource) Unwrap() error { return t.err }

// verdict tells the source whether the copy checked out (problem nil) and,
// if it did, waits for the source's commit: until then the guest stays
// with the source.
func (rc *receiver) verdict(problem error) error {
	reason := ""
	if problem != nil {
		reason = problem.Error()
	}
	// Before it goes: the source reads it after, so that its reading
	// plus the time since this is never before the guest's start here
	// (walk 145: taken after the flush, the downtime came 1.8 ms short).
	rc.verdictAt = rc.cfg.Clock.Now()
	err := rc.w.Verified(problem == nil, reason)
	if err == nil {
		err = rc.w.Flush()
	}
	if problem != nil {
		return problem // the source learns it too, if it is still there
	}
	if err != nil {
		return fmt.Errorf("report verification: %w", err)
	}
	rec, err := rc.r.Next()
	if err != nil && rc.cfg.Reconnect != nil && rc.link.ctx.Err() == nil {
		rc.log.Warn("the link broke before the source's commit came; waiting for the source to connect again and repeat it", "for", commitWait, "err", err)
		rec, err = rc.awaitCommit(err)
		var told *toldSource
		switch {
		case errors.As(err, &told):
			return err
		case err == nil:
			rc.log.Info("the source connected again and repeated its commit")
		default:
			err = fmt.Errorf("%w; the source did not connect again to repeat it within %v", err, commitWait)
		}
	}
	if err != nil {
		return fmt.Errorf("the link broke before the source's commit came, so this destination does not start the guest (%w); "+
			"the source paused it for the switch-over: if its migration reports completed, the commit was lost on the way and the guest is paused there (resume it there with QMP cont); if it failed, it runs there (or stays paused there, if its user had paused it)", err)
	}
	switch rec.Type {
	case RecCommit:
		rc.hold = !rec.OK
		return nil
	case RecAbort:
		return fmt.Errorf("%w: %s", errSourceAborted, rec.Text)
	}
	return fmt.Errorf("expected a commit, got a %s record: %w", rec.Type, ErrMalformed)
}

// commitWait is how long a destination whose link broke before the
// commit waits for the source to connect again and repeat it (the source
// tries for recommitFor after it notices).
const commitWait = 30 * time.Second

// awaitCommit waits up to commitWait for the source to connect again
// (hello mode commitMode) and repeat its commit, and makes that
// connection the link, for the audit after it. Other peers are refused
// meanwhile. It returns the record after the handshake (the commit, or an
// abort), or broke if no source came.
func (rc *receiver) awaitCommit(broke error) (*Record, error) {
	ctx, cancel := context.WithTimeout(rc.link.ctx, commitWait)
	defer cancel()
	for {
		conn, err := rc.cfg.Reconnect(ctx)
		if err != nil {
			return nil, broke
		}
		// Stopped, or the VM gone: reads on this connection end too.
		unblock := context.AfterFunc(rc.link.ctx, func() { conn.SetReadDeadline(time.Now()) })
		lc := &linkConn{Conn: conn, ctx: rc.link.ctx, limit: NewLimiter(0), idle: min(rc.cfg.IdleTimeout, helloWait)}
		w, r := NewWriter(lc), NewReader(lc)
		rec, err := r.Next()
		if err == nil && rec.Type == RecHello && rec.Hello.Mode == resumeMode && rc.checkHello(rec.Hello) == nil {
			// A post-copy source that took the lost commit as sent, and
			// its link's end for stage 3's: it runs the guest on, told.
			if w.Text(RecRefuse, noCommitText) == nil {
				w.Flush()
			}
			unblock()
			conn.Close()
			return nil, &toldSource{fmt.Errorf("the link broke before the source's commit came, so this destination does not start the guest (%w); "+
				"the source, reconnecting for post-copy, was told, and runs the guest on", broke)}
		}
		if err == nil && (rec.Type != RecHello || !strings.HasPrefix(rec.Hello.Mode, commitMode+":")) {
			err = fmt.Errorf("this destination waits up to %v for its source to repeat the commit of a migration under way, and takes no other", commitWait)
		} else if err == nil && rec.Hello.Mode != commitMode+":"+stateTag(rc.state.data) {
			err = errors.New("a source repeating the commit of another migration: the guest state it sent is not the one this destination holds")
		}
		if err == nil {
			err = rc.checkHello(rec.Hello)
		}
		if err != nil {
			if rec != nil && w.Text(RecRefuse, err.Error()) == nil {
				w.Flush()
			}
			rc.log.Warn("refused a connection while waiting for the source's commit", "from", conn.RemoteAddr().String(), "err", err)
			unblock()
			conn.Close()
			continue
		}
		if err = w.Text(RecAccept, ""); err == nil {
			err = w.Flush()
		}
		if err == nil {
			rec, err = r.Next()
		}
		if err != nil {
			rc.log.Warn("a source connected again for its commit, and went", "err", err)
			unblock()
			conn.Close()
			continue
		}
		lc.idle = rc.cfg.IdleTimeout
		r.SetLimits(rc.pages)
		rc.conns = append(rc.conns, conn)
		rc.read += rc.r.Bytes()
		rc.link, rc.w, rc.r = lc, w, r
		return rec, nil
	}
}

// restore loads the guest's state into the destination: a failure is a
// failed verification, and the guest stays with the source.
func (rc *receiver) restore() error {
	start := rc.cfg.Clock.Now()
	state, err := UnpackState(rc.state.kind, rc.state.data)
	if err != nil {
		return fmt.Errorf("the guest's state: %w", err)
	}
	if rc.state.kind&StateZstd != 0 {
		rc.log.Debug("state unpacked", "bytes", len(state), "packed", len(rc.state.data), "took", rc.cfg.Clock.Now().Sub(start))
	}
	if err := rc.d.Restore(state); err != nil {
		return fmt.Errorf("restore the guest's state: %w", err)
	}
	return nil
}

// complete checks that every page has arrived, but those of later (the
// dirty pages TSMC's stage 3 brings; nil for none), and the state.
func (rc *receiver) complete(later *bitmap.Bitmap) error {
	var missing uint64
	if later == nil {
		missing = rc.pages - rc.seen.Count()
	} else {
		for i, w := range rc.seen.Words() {
			missing += uint64(bits.OnesCount64(^(w | later.Words()[i])))
		}
		if extra := rc.pages % 64; extra != 0 { // bits past the last page
			missing -= 64 - extra
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d pages never arrived", missing, rc.pages)
	}
	if !rc.state.begun {
		return errors.New("no guest state arrived")
	}
	if !rc.state.done() {
		return fmt.Errorf("%d of the guest state's %d bytes arrived", len(rc.state.data), rc.state.total)
	}
	return nil
}

// zeroPages makes the pages of b, a run of guest memory, all zero. Guest
// memory in shared memory (a memfd or a tmpfs file: pagecast's own VMs',
// QEMU's) has the run punched out of it (MADV_REMOVE), which touches no
// page: memory the guest never wrote stays unallocated, as it was on the
// source, and a run of gigabytes takes a system call. Clearing it instead
// allocated it all: a 5 GiB QEMU destination spent over 10 s in one
// clear, and the source gave up on a link that had gone idle. Elsewhere
// (memory the Go heap holds) the run is cleared.
// populate maps in the pages of gfns not received yet, one call per run
// of consecutive ones, before they are written. Faulted in one at a time
// as they were copied to, a fresh memfd's pages took 18 µs each on this
// machine (a guest of a PVM hypervisor), populated a MiB at a time 8–10
// µs, and faults were a quarter of a receiver's CPU. Where the kernel or
// the memory cannot (before Linux 5.14; memory not page-aligned), the
// pages fault in as before. Where the memory cannot be had (EFAULT: the
// file system holding it is full, where a write would raise SIGBUS;
// ENOMEM) it fails.
func (rc *receiver) populate(gfns []uint64) error {
	for i := 0; i < len(gfns) && !rc.noPopulate; {
		j := i + 1
		for j < len(gfns) && gfns[j] == gfns[j-1]+1 {
			j++
		}
		if !rc.seen.Has(gfns[i]) {
			err := unix.Madvise(rc.mem[gfns[i]*PageSize:(gfns[j-1]+1)*PageSize], unix.MADV_POPULATE_WRITE)
			switch err {
			case nil, unix.EINTR, unix.EAGAIN: // the last two: this run faults in
			case unix.EFAULT, unix.ENOMEM:
				return fmt.Errorf("allocate guest pages %#x-%#x: %s (madvise: %w)", gfns[i], gfns[j-1], rc.memoryRoom(), err)
			default:
				rc.noPopulate = true
				rc.log.Debug("pages will fault in as written", "madvise", err)
			}
		}
		i = j
	}
	return nil
}

func zeroPages(b []byte) {
	if len(b) == 0 {
		return
	}
	if err := unix.Madvise(b, unix.MADV_REMOVE); err != nil {
		clear(b)
	}
}

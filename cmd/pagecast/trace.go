package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/trace"
)

func traceCommand() *cli.Command {
	return &cli.Command{
		Name:  "trace",
		Usage: "inspect, export and import dirty traces (.pct files)",
		Description: "A trace records, epoch by epoch, the guest pages a VM dirtied. pagecast's profiler writes\n" +
			"them; the predictor and simulator read them. See the trace package for the file format.",
		Subcommands: []*cli.Command{
			{
				Name:      "info",
				Usage:     "describe a trace: metadata, epochs, pages, working set and any damage",
				ArgsUsage: "FILE",
				Description: "Reads the whole trace and prints its metadata and figures. Damaged stretches (a torn\n" +
					"tail, corrupt records) are skipped and listed, the first " + fmt.Sprint(damageListed) + " unless --all-damage; they do\n" +
					"not make the command fail. A file that is not a trace does.",
				Flags: []cli.Flag{anyPageSizeFlag(),
					&cli.BoolFlag{Name: "all-damage", Usage: fmt.Sprintf("list every damaged stretch, not the first %d", damageListed)}},
				Action: traceInfo,
			},
			{
				Name:      "export",
				Usage:     "write a trace's pages as CSV or Parquet, one row per page dirtied in an epoch",
				ArgsUsage: "FILE",
				Description: "Rows are epoch,page, epochs and pages ascending; in CSV an epoch without pages has a row\n" +
					"without a page (\"336,\"), so that trace import gives back the same epochs (epoch indices the\n" +
					"trace lacks, lost to damage, have none: a warning says so). CSV starts with the header line epoch,page.\n" +
					"Parquet has two INT64 columns, epoch and page (OPTIONAL: an empty epoch's row has a null page),\n" +
					"and the trace's metadata as pagecast.* key/value metadata. A damaged trace is exported as\n" +
					"far as it reads, with a warning.\n\n" +
					"Example: pagecast trace export --format parquet -o awk.parquet awk.pct",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "csv", Usage: "output format: csv or parquet"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"},
						Usage: "output file, replaced when the export is complete (through a symbolic link, the file it points to; a device or FIFO is written into) (default: standard output; parquet needs a file)"},
					anyPageSizeFlag(),
				},
				Action: traceExport,
			},
			{
				Name:      "import",
				Usage:     "turn a CSV trace (epoch,page rows) into a trace file",
				ArgsUsage: "IN.csv[.gz]",
				Description: "Reads rows epoch,page (header optional; gzip detected; - is standard input). Epochs must\n" +
					"ascend; rows within an epoch may come in any order, duplicates are dropped; a row without a\n" +
					"page (\"336,\") is an empty epoch. Epochs with no rows between two that have rows become empty\n" +
					"epochs, so indices are kept (at most " + fmt.Sprint(trace.MaxImportGap) + " such in all, and one more for every " + fmt.Sprint(trace.ImportBytesPerGap) + " bytes of rows\n" +
					"read: a few bytes of CSV cannot make a trace of millions of epochs; past that, give the empty\n" +
					"epochs their rows, as trace export does); the trace starts at\n" +
					"the first row's epoch (a trace exported from the profiler's, whose first epoch is 1, comes back\n" +
					"starting at 1, as it was).\n\n" +
					"Example: pagecast trace import --memory 256M --epoch 100ms -o awk.pct awk.csv.gz   # an epoch,page CSV, gzipped or not",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "csv", Usage: "input format: csv"},
					&cli.StringFlag{Name: "memory", Aliases: []string{"m"}, Required: true,
						Usage: "guest memory size of the traced VM (K, M, G, T or P suffix); pages must lie below it; required"},
					&cli.StringFlag{Name: "epoch", Value: "100ms", Usage: "length of one epoch (the profiler's, the migration engine's and predict's and simulate's for a CSV)"},
					pageSizeFlag("", false),
					anyPageSizeFlag(),
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true,
						Usage: "trace file to write (.pct), replaced when the import is complete (through a symbolic link, the file it points to; a device or FIFO is written into); required"},
					&cli.StringFlag{Name: "source", Usage: "what was traced, stored in the trace (default: \"csv import of IN\")"},
					&cli.StringFlag{Name: "hook", Usage: "what recorded the writes, stored in the trace"},
					&cli.StringFlag{Name: "guest", Usage: "pagecast where the trace is of pagecast's own guest (stored in the trace: simulate then throttles it as such, not as a Linux guest)"},
				},
				Action: traceImport,
			},
		},
	}
}

// oneArg returns the command's single argument.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		// The error is printed after "pagecast: ": the command's name
		// without the program's.
		return "", fmt.Errorf("%s: want one %s argument, got %d (see %s --help)", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), what, c.NArg(), c.Command.HelpName)
	}
	return c.Args().First(), nil
}

func traceInfo(c *cli.Context) error {
	defer allowPageSizes(c)()
	path, err := oneArg(c, "trace file")
	if err != nil {
		return err
	}
	r, err := trace.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	s, err := trace.Summarize(r)
	if err != nil {
		return err
	}
	m := r.Meta()
	size := int64(-1)
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	orNone := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	out := c.App.Writer
	major, minor := r.Version()
	// The header's text is someone else's (walk 122: a hook with
	// escapes set the terminal's title and cleared it, a source with a
	// newline forged a row): printed escaped, on one line.
	fmt.Fprintf(out, "%s: pagecast trace, format %d.%d, %s\n", printable.Line(path), major, minor, units.FormatBytes(float64(size)))
	row := func(name, format string, args ...any) {
		fmt.Fprintf(out, "%-12s %s\n", name, printable.Line(fmt.Sprintf(format, args...)))
	}
	row("memory", "%s, %d pages of %d B", units.FormatBytes(float64(m.MemoryBytes)), m.Pages(), m.PageSize)
	row("epoch", "%v", m.Epoch)
	row("hook", "%s", orNone(m.Hook))
	row("source", "%s", orNone(m.Source))
	// What simulate's --throttle-response defaults to turns on it.
	switch g := m.Guest(); {
	case g == trace.GuestPagecast:
		row("guest", "pagecast's own (simulate throttles it as such: --throttle-response linear)")
	case g != "":
		row("guest", "%s (not pagecast: simulate throttles it as a Linux guest: --throttle-response linux)", g)
	default:
		row("guest", "not said (simulate throttles it as a Linux guest: --throttle-response linux)")
	}
	if m.Start.IsZero() {
		row("start", "-")
	} else {
		row("start", "%s", m.Start.UTC().Format(time.RFC3339Nano))
	}
	for _, k := range slices.Sorted(maps.Keys(m.Extra)) {
		if k == trace.ExtraGuest {
			continue // said above
		}
		row("extra", "%s=%s", k, m.Extra[k])
	}
	if s.Epochs == 0 {
		row("epochs", "none")
	} else {
		// Indices are at most trace.MaxEpochIndex: the span may pass the
		// largest Duration by one epoch.
		span := time.Duration(s.Last-s.First) * m.Epoch
		spanText := (span + m.Epoch).String()
		if span > math.MaxInt64-m.Epoch {
			spanText = "292 years"
		}
		row("epochs", "%d (indices %d to %d, %s), %d empty, %d missing",
			s.Epochs, s.First, s.Last, spanText, s.Empty, s.Missing)
		row("pages", "%d dirtied, %d distinct", s.Pages, s.Distinct)
		rate := s.MeanPages() / m.Epoch.Seconds()
		row("per epoch", "min %d, mean %.1f, max %d pages (mean %.0f pages/s, %s/s)",
			s.MinPages, s.MeanPages(), s.MaxPages, rate, units.FormatBytes(rate*float64(m.PageSize)))
		row("working set", "%d pages, %s, %.1f%% of memory",
			s.Distinct, units.FormatBytes(float64(s.Distinct)*float64(m.PageSize)), 100*float64(s.Distinct)/float64(m.Pages()))
		if s.Pages > 0 {
			// Where in memory: a walk checking that a guest's writes above
			// 4 GiB were recorded had to export the trace to see it.
			row("page range", "%d to %d (offsets %#x to %#x in guest RAM)",
				s.LowPage, s.HighPage, s.LowPage*uint64(m.PageSize), (s.HighPage+1)*uint64(m.PageSize)-1)
		}
	}
	damage := r.Damage()
	if len(damage) == 0 {
		row("damage", "none")
		return nil
	}
	var lost int64
	for _, d := range damage {
		lost += d.Length
	}
	row("damage", "DAMAGED: %s, %d of %d bytes skipped; the epochs in them are lost", stretches(len(damage)), lost, size)
	listed := damage
	if len(damage) > damageListed && !c.Bool("all-damage") {
		listed = damage[:damageListed]
	}
	for _, d := range listed {
		fmt.Fprintf(out, "%-12s %s\n", "", d)
	}
	if rest := damage[len(listed):]; len(rest) > 0 {
		var bytes int64
		for _, d := range rest {
			bytes += d.Length
		}
		more := fmt.Sprintf("%d more damaged stretches", len(rest))
		if len(rest) == 1 {
			more = "1 more damaged stretch"
		}
		fmt.Fprintf(out, "%-12s … and %s (%d bytes; --all-damage lists them)\n", "", more, bytes)
	}
	return nil
}

// damageListed is how many damaged stretches trace info lists unless
// told to list all: a file of 200 000 one-byte stretches printed 12.5 MB
// of them (walk 148).
const damageListed = 16

func traceExport(c *cli.Context) error {
	defer allowPageSizes(c)()
	path, err := oneArg(c, "trace file")
	if err != nil {
		return err
	}
	format, output := c.String("format"), c.String("output")
	var export func(io.Writer, *trace.Reader) (int64, error)
	switch format {
	case "csv":
		export = trace.ExportCSV
	case "parquet":
		if output == "" || output == "-" {
			return errors.New("--format parquet needs an output file, -o FILE")
		}
		export = trace.ExportParquet
	default:
		return fmt.Errorf("--format %q: want csv or parquet", format)
	}
	if output != "" && output != "-" {
		if err := checkOutput("-o", output); err != nil {
			return err
		}
	}
	if sameFile(path, output) {
		return fmt.Errorf("-o %s is the trace being exported: it would be replaced; give another file", output)
	}
	r, err := trace.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	var rows int64
	if output == "" || output == "-" {
		rows, err = export(c.App.Writer, r)
	} else {
		err = writeOutput(output, func(w io.Writer) error {
			var err error
			rows, err = export(w, r)
			return err
		})
	}
	if err != nil {
		return err
	}
	if d := r.Damage(); len(d) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s is damaged: exported what reads, skipped %s (see pagecast trace info)\n", printable.Line(path), stretches(len(d)))
	}
	if n := r.Skipped(); n > 0 {
		if format == "csv" {
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s lacks %d epoch indices between its first and last (lost to damage, or never recorded): CSV rows cannot say so, and pagecast trace import reads a CSV's as empty epochs, refusing more than %d of those (and one more for every %d bytes of rows)\n",
				printable.Line(path), n, trace.MaxImportGap, trace.ImportBytesPerGap)
		} else {
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s lacks %d epoch indices between its first and last (lost to damage, or never recorded): they have no row, where an idle epoch has one with a null page\n",
				printable.Line(path), n)
		}
	}
	if format == "csv" && r.Meta().Guest() == trace.GuestPagecast {
		// What simulate's throttle turns on (walk 119: re-imported,
		// throttle took 3.360 s where it had taken 2.906 s).
		fmt.Fprintln(c.App.ErrWriter, "pagecast: note: a CSV keeps the pages, not the trace's header, which says it is of pagecast's own guest: import it back with --guest pagecast "+
			"(or simulate it with --throttle-response linear), or simulate takes it for a Linux guest's when it throttles it")
	}
	if output != "" && output != "-" {
		fmt.Fprintf(c.App.Writer, "exported %d rows to %s\n", rows, printable.Line(output))
	}
	return nil
}

// pageSizeFlag is --page-size, a CSV trace's guest page size, read as
// --memory is: 4K, 2M, 1G or bytes (an unsigned flag refused 1G as "want
// a whole number", walk 129). csvGeometry checks it.
func pageSizeFlag(prefix string, hidden bool) cli.Flag {
	return &cli.StringFlag{Name: "page-size", Value: "4K", Hidden: hidden,
		Usage: prefix + "guest page size, e.g. 4K, 2M or 1G (or bytes): a power of two from 4 KiB to 1 GiB (from 512 B with --any-page-size)"}
}

// anyPageSizeFlag lets a command take page sizes other than hypervisors':
// in its --page-size and in the traces it reads and writes.
func anyPageSizeFlag() cli.Flag {
	return &cli.BoolFlag{Name: "any-page-size",
		Usage: "accept any power of two from 512 B to 1 GiB as a page size, not only the 4 KiB to 1 GiB hypervisors use"}
}

// allowPageSizes applies --any-page-size while the command runs; call the
// function it returns when it ends.
func allowPageSizes(c *cli.Context) (restore func()) {
	previous := trace.AllowAnyPageSize(c.Bool("any-page-size"))
	return func() { trace.AllowAnyPageSize(previous) }
}

// csvGeometry reads --memory, --page-size and --epoch: what a CSV trace
// does not say about the VM it came from.
func csvGeometry(c *cli.Context) (predictor.CSVOptions, error) {
	var g predictor.CSVOptions
	mem, err := units.ParseBytes(c.String("memory"))
	if err != nil {
		return g, fmt.Errorf("--memory: %w", err)
	}
	given := c.String("page-size")
	ps, err := units.ParseBytes(given)
	if err != nil {
		return g, fmt.Errorf("--page-size: %w", err)
	}
	if trace.CheckPageSize(ps) != nil {
		if c.Bool("any-page-size") {
			return g, fmt.Errorf("--page-size %s: want a power of two from 512 B to 1 GiB", given)
		}
		hint := ""
		if hasFlag(c, "any-page-size") {
			hint = " (or from 512 B with --any-page-size)"
		}
		return g, fmt.Errorf("--page-size %s: want a power of two from 4 KiB to 1 GiB, what hypervisors use%s", given, hint)
	}
	if mem == 0 || mem%ps != 0 {
		return g, fmt.Errorf("--memory %s: want a positive whole number of %d-byte pages", c.String("memory"), ps)
	}
	if mem > trace.MaxMemoryBytes {
		return g, fmt.Errorf("--memory %s: over the 4 PiB a 52-bit physical address reaches", c.String("memory"))
	}
	epoch, err := time.ParseDuration(c.String("epoch"))
	if err != nil || epoch <= 0 || epoch > trace.MaxEpoch {
		// Up to what a trace's header takes (walk 131: simulate
		// --epoch 4h was taken, a trace of it refused).
		return g, fmt.Errorf("--epoch %q: want a positive duration up to %v, such as 1s or 100ms", c.String("epoch"), trace.MaxEpoch)
	}
	return predictor.CSVOptions{MemoryBytes: mem, PageSize: uint32(ps), Epoch: epoch}, nil
}

func traceImport(c *cli.Context) error {
	defer allowPageSizes(c)()
	in, err := oneArg(c, "CSV file")
	if err != nil {
		return err
	}
	if f := c.String("format"); f != "csv" {
		return fmt.Errorf("--format %q: want csv", f)
	}
	geo, err := csvGeometry(c)
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		// Refused before the import, not after it (walk 134: "rename
		// .22554.tmp : no such file or directory").
		return errors.New("-o \"\": give the file to write the trace to")
	}
	if out == "-" {
		// Not a file named "-" (walk 136), where - is standard input
		// for the CSV: the trace is binary, and this command's summary
		// goes to standard output.
		return errors.New("-o -: give the file to write the trace to (./- for a file of that name)")
	}
	if err := checkOutput("-o", out); err != nil {
		return err
	}
	src := io.Reader(os.Stdin)
	name, said := "standard input", "standard input" // said: in errors (walk 136: "-: csv: …")
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		src, name, said = f, filepath.Base(in), in
	}
	m := trace.Meta{
		MemoryBytes: geo.MemoryBytes,
		PageSize:    geo.PageSize,
		Epoch:       geo.Epoch,
		Hook:        c.String("hook"),
		Source:      c.String("source"),
	}
	if m.Source == "" {
		m.Source = "csv import of " + name
	}
	switch g := c.String("guest"); g {
	case "":
	case trace.GuestPagecast:
		m.Extra = map[string]string{trace.ExtraGuest: g}
	default:
		return fmt.Errorf("--guest %q: want pagecast (pagecast's own guest), or leave it out", g)
	}
	if sameFile(in, out) {
		return fmt.Errorf("-o %s is the CSV being imported: it would be replaced; give another file", out)
	}
	var st trace.ImportStats
	var size int64
	err = writeOutput(out, func(f io.Writer) error {
		w, err := trace.NewWriter(f, m)
		if err != nil {
			return err
		}
		if st, err = trace.ImportCSV(src, w); err != nil {
			return fmt.Errorf("%s: %w", said, err)
		}
		if st.Rows == 0 {
			return fmt.Errorf("%s: no epoch,page rows: nothing to import (%s is not written)", said, out)
		}
		size = w.Size()
		return w.Close()
	})
	if err != nil {
		return err
	}
	perPage := 0.0
	if st.Pages > 0 {
		perPage = float64(size) / float64(st.Pages)
	}
	many := func(n uint64, what string) string { // not "1 epochs" (walk 134)
		if n == 1 {
			return "1 " + strings.TrimSuffix(what, "s")
		}
		return fmt.Sprintf("%d %s", n, what)
	}
	fmt.Fprintf(c.App.Writer, "imported %s, %s (%s) from %s into %s: %s, %.2f bytes/page\n",
		many(uint64(st.Epochs), "epochs"), many(uint64(st.Pages), "pages"), many(uint64(st.Rows), "rows"), printable.Line(name), printable.Line(out), units.FormatBytes(float64(size)), perPage)
	return nil
}

// stretches counts damaged stretches in words.
func stretches(n int) string {
	if n == 1 {
		return "1 damaged stretch"
	}
	return fmt.Sprintf("%d damaged stretches", n)
}

// sameFile says whether paths a and b name one existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// hasFlag reports whether c's command has the flag name.
func hasFlag(c *cli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

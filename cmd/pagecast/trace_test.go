package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"

	"github.com/pagecast/pagecast/trace"
)

// runApp runs pagecast in-process with args and returns what it printed.
func runApp(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err = app.Run(append([]string{"pagecast"}, args...))
	return out.String(), errOut.String(), err
}

const traceCSV = "epoch,page\n0,1\n0,2\n0,3\n2,7\n2,65535\n3,0\n"

// exportedCSV is traceCSV as trace export writes it back: with a row for
// the empty epoch 1, which the input left unsaid.
const exportedCSV = "epoch,page\n0,1\n0,2\n0,3\n1,\n2,7\n2,65535\n3,0\n"

// importTrace imports traceCSV into a trace file and returns its path.
func importTrace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(in, []byte(traceCSV), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "t.pct")
	stdout, _, err := runApp(t, "trace", "import", "--format", "csv", "--memory", "256M", "--epoch", "100ms",
		"--source", "unit test", "-o", out, in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout, "imported 4 epochs, 6 pages (6 rows) from in.csv into "+out) {
		t.Fatalf("import printed %q", stdout)
	}
	return out
}

func TestTraceImportExport(t *testing.T) {
	path := importTrace(t)
	stdout, stderr, err := runApp(t, "trace", "export", path)
	if err != nil || stderr != "" {
		t.Fatalf("export: %v %q", err, stderr)
	}
	if stdout != exportedCSV {
		t.Fatalf("export printed %q, want %q", stdout, exportedCSV)
	}

	pq := filepath.Join(t.TempDir(), "t.parquet")
	stdout, _, err = runApp(t, "trace", "export", "--format", "parquet", "-o", pq, path)
	if err != nil || stdout != "exported 7 rows to "+pq+"\n" {
		t.Fatalf("parquet export: %v %q", err, stdout)
	}
	f, err := os.Open(pq)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	rows, err := parquet.Read[trace.ParquetRow](f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("epoch,page\n")
	for _, r := range rows {
		if r.Page == nil {
			fmt.Fprintf(&csv, "%d,\n", r.Epoch) // the idle epoch, as the CSV's
			continue
		}
		fmt.Fprintf(&csv, "%d,%d\n", r.Epoch, *r.Page)
	}
	if csv.String() != exportedCSV {
		t.Fatalf("parquet rows, as CSV: %q, want %q", csv.String(), exportedCSV)
	}
}

// writeTrace writes epochs as a trace of m at path.
func writeTrace(t *testing.T, path string, m trace.Meta, epochs ...trace.Epoch) {
	t.Helper()
	w, err := trace.Create(path, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range epochs {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A trace that lacks epoch indices is exported with a warning that a CSV
// cannot say so: imported back, they are empty epochs, and more than
// trace.MaxImportGap of them were refused without a word of why at export.
func TestTraceExportSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gaps.pct")
	var epochs []trace.Epoch
	for _, i := range []uint64{1, 2, 10, 5000} {
		epochs = append(epochs, trace.Epoch{Index: i, Pages: []uint64{i % 256}})
	}
	writeTrace(t, path, trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 100 * time.Millisecond}, epochs...)
	stdout, stderr, err := runApp(t, "trace", "export", path)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "epoch,page\n1,1\n2,2\n10,10\n5000,136\n" {
		t.Errorf("export printed %q", stdout)
	}
	if !strings.Contains(stderr, "lacks 4996 epoch indices between its first and last") || !strings.Contains(stderr, "CSV rows cannot say so") {
		t.Errorf("no warning of the indices lacking: %q", stderr)
	}
	if _, stderr, _ := runApp(t, "trace", "export", importTrace(t)); stderr != "" {
		t.Errorf("a trace of every index warned: %q", stderr)
	}
}

func TestTraceInfo(t *testing.T) {
	path := importTrace(t)
	stdout, _, err := runApp(t, "trace", "info", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pagecast trace, format 1.0",
		"memory       256.0 MiB, 65536 pages of 4096 B",
		"epoch        100ms",
		"source       unit test",
		"guest        not said (simulate throttles it as a Linux guest: --throttle-response linux)",
		"epochs       4 (indices 0 to 3, 400ms), 1 empty, 0 missing",
		"pages        6 dirtied, 6 distinct",
		"per epoch    min 0, mean 1.5, max 3 pages",
		"working set  6 pages, 24.0 KiB, 0.0% of memory",
		"page range   0 to 65535 (offsets 0x0 to 0xfffffff in guest RAM)",
		"damage       none",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("info lacks %q:\n%s", want, stdout)
		}
	}
}

// TestTraceInfoEscapes: a header's text is someone else's; trace info
// prints it escaped, on one line (walk 122: a hook's escapes set the
// terminal's title and cleared it, a source's newline forged a guest row).
func TestTraceInfoEscapes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "n\x1b]0;T\x07.pct")
	w, err := trace.Create(path, trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 100 * time.Millisecond,
		Hook:   "\x1b]0;PWNED\x07\x1b[2J",
		Source: "lab vm\nguest        pagecast's own\ndamage       none",
		Extra:  map[string]string{"k\x1b[31m": "v\rx\xff\x9b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(trace.Epoch{Index: 1, Pages: []uint64{3}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runApp(t, "trace", "info", path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(stdout, "\x1b\x07\r\xff\x9b") || !utf8.ValidString(stdout) {
		t.Errorf("info printed control characters or bytes not UTF-8:\n%q", stdout)
	}
	for _, want := range []string{
		`n\x1b]0;T\x07.pct: pagecast trace`,
		`hook         \x1b]0;PWNED\x07\x1b[2J`,
		"source       lab vm; guest        pagecast's own; damage       none\n",
		`extra        k\x1b[31m=v\x0dx\xff\x9b`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("info lacks %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "\nguest "); n != 1 {
		t.Errorf("%d guest rows, want 1:\n%s", n, stdout)
	}
}

// recordOffsets is where each record of a trace file's bytes begins (at
// its marker), to damage one.
func recordOffsets(data []byte) []int {
	var records []int
	for i := 0; ; i++ {
		j := bytes.Index(data[i:], []byte("\x00PCR"))
		if j < 0 {
			return records
		}
		i += j
		records = append(records, i)
	}
}

// TestTraceInfoDamaged checks that info reads past damage, lists it and
// still succeeds.
func TestTraceInfoDamaged(t *testing.T) {
	path := importTrace(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Records: epoch 0 (3 pages), 1 (empty), 2 (2 pages), 3 (1 page).
	// Damage epoch 1's.
	records := recordOffsets(data)
	if len(records) != 4 {
		t.Fatalf("found %d records", len(records))
	}
	data[records[1]+10] ^= 0xff
	data = data[:len(data)-3] // and tear the last
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runApp(t, "trace", "info", path)
	if err != nil {
		t.Fatalf("info on a damaged trace: %v", err)
	}
	for _, want := range []string{
		"epochs       2 (indices 0 to 2, 300ms), 0 empty, 1 missing",
		"DAMAGED: 2 damaged stretches",
		"checksum mismatch",
		"runs past the end of the file",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("info lacks %q:\n%s", want, stdout)
		}
	}
	_, stderr, err := runApp(t, "trace", "export", path)
	if err != nil || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "2 damaged stretches") {
		t.Fatalf("export of a damaged trace: %v, stderr %q", err, stderr)
	}
}

// TestTraceErrors runs the binary on bad input: one line on stderr naming
// the problem, exit status 1.
func TestTraceErrors(t *testing.T) {
	dir := t.TempDir()
	notTrace := filepath.Join(dir, "notes.txt")
	os.WriteFile(notTrace, []byte("hello\n"), 0o644)
	badCSV := filepath.Join(dir, "bad.csv")
	os.WriteFile(badCSV, []byte("epoch,page\n0,1\n0,70000\n"), 0o644)
	good := importTrace(t)
	emptyCSV := filepath.Join(dir, "empty.csv")
	os.WriteFile(emptyCSV, []byte("epoch,page\n"), 0o644)
	binaryFile := filepath.Join(dir, "blob.csv")
	os.WriteFile(binaryFile, []byte("\x00\x01\xffgarbage,\x02\n"), 0o644)
	// A .csv.gz cut short, and one with a byte flipped.
	var rows bytes.Buffer
	rows.WriteString("epoch,page\n")
	for i := range 100000 {
		fmt.Fprintf(&rows, "%d,%d\n", i/1000, (i*7919)%65536)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write(rows.Bytes())
	zw.Close()
	truncatedGz := filepath.Join(dir, "truncated.csv.gz")
	os.WriteFile(truncatedGz, zipped.Bytes()[:zipped.Len()/2], 0o644)
	flipped := bytes.Clone(zipped.Bytes())
	flipped[len(flipped)/2] ^= 0x55
	corruptGz := filepath.Join(dir, "corrupt.csv.gz")
	os.WriteFile(corruptGz, flipped, 0o644)
	out := filepath.Join(dir, "out.pct")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"import truncated gzip", []string{"trace", "import", "--memory", "256M", "-o", out, truncatedGz}, truncatedGz + ": csv: gzip stream truncated or corrupt: unexpected EOF"},
		{"import corrupt gzip", []string{"trace", "import", "--memory", "256M", "-o", out, corruptGz}, corruptGz + ": csv: gzip stream truncated or corrupt: "},
		{"eval truncated gzip", []string{"predict", "eval", "--memory", "256M", truncatedGz}, truncatedGz + ": csv: gzip stream truncated or corrupt: unexpected EOF"},
		{"eval corrupt gzip", []string{"predict", "eval", "--memory", "256M", corruptGz}, corruptGz + ": csv: gzip stream truncated or corrupt: "},
		{"not a trace", []string{"trace", "info", notTrace}, notTrace + ": not a pagecast trace"},
		{"missing file", []string{"trace", "info", filepath.Join(dir, "absent.pct")}, "no such file"},
		{"no file", []string{"trace", "info"}, "want one trace file argument"},
		{"unknown command", []string{"trace", "bogus"}, "trace bogus: no such command; trace has info, export, import"},
		{"export not a trace", []string{"trace", "export", notTrace}, "not a pagecast trace"},
		{"parquet to stdout", []string{"trace", "export", "--format", "parquet", good}, "needs an output file"},
		{"unknown format", []string{"trace", "export", "--format", "json", good}, `--format "json": want csv or parquet`},
		{"import without memory", []string{"trace", "import", "--epoch", "1s", "-o", out, badCSV}, "trace import needs --memory (see pagecast trace import --help)"},
		{"import bad memory", []string{"trace", "import", "--memory", "lots", "--epoch", "1s", "-o", out, badCSV}, `size "lots"`},
		{"import bad epoch", []string{"trace", "import", "--memory", "256M", "--epoch", "soon", "-o", out, badCSV}, `--epoch "soon"`},
		{"import bad page size", []string{"trace", "import", "--memory", "256M", "--epoch", "1s", "--page-size", "3000", "-o", out, badCSV}, "--page-size 3000"},
		{"import page beyond memory", []string{"trace", "import", "--memory", "256M", "--epoch", "1s", "-o", out, badCSV}, "csv line 3: page 70000 is beyond the 65536 pages"},
		{"import unknown format", []string{"trace", "import", "--format", "tsv", "--memory", "256M", "--epoch", "1s", "-o", out, badCSV}, `--format "tsv"`},
		{"import over its input", []string{"trace", "import", "--memory", "256M", "-o", badCSV, badCSV}, "is the CSV being imported: it would be replaced"},
		{"export over its input", []string{"trace", "export", "-o", good, good}, "is the trace being exported: it would be replaced"},
		{"import a trace", []string{"trace", "import", "--memory", "256M", "-o", out, good}, "a pagecast trace, not CSV: use it as it is"},
		{"import binary", []string{"trace", "import", "--memory", "256M", "-o", out, binaryFile}, "csv line 1: binary data, not text"},
		{"import nothing", []string{"trace", "import", "--memory", "256M", "-o", out, emptyCSV}, "no epoch,page rows: nothing to import"},
		{"info on a CSV", []string{"trace", "info", badCSV}, "not a pagecast trace: an epoch,page CSV becomes one with pagecast trace import --memory SIZE"},
		{"flag after the file", []string{"trace", "import", badCSV, "--memory", "256M"}, `--memory after the argument "` + badCSV + `" is not read as a flag: put flags before the arguments`},
		{"flag after the trace", []string{"predict", "eval", good, "--horizon", "8"}, "--horizon after the argument"},
		{"plots in a file", []string{"predict", "eval", "--plots", notTrace, good}, "--plots: mkdir " + notTrace + ": not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; stderr %q", err, stderr.String())
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "pagecast: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q: want one line starting \"pagecast: \" containing %q", msg, tc.want)
			}
			if stdout.Len() != 0 { // urfave/cli printed the whole usage for a missing required flag
				t.Fatalf("stdout %q, want nothing", stdout.String())
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed import left %s behind: %v", out, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// TestAnyPageSize: page sizes below what hypervisors use are refused, from
// --page-size and in trace files, unless --any-page-size says otherwise;
// the setting lasts only as long as the command.
func TestAnyPageSize(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(in, []byte(traceCSV), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "t.pct")
	for _, tc := range []struct {
		name string
		args []string
		want string // in stdout, or in the error if fail
		fail bool
	}{
		{"import 512 refused", []string{"trace", "import", "--memory", "32M", "--epoch", "1s", "--page-size", "512", "-o", out, in},
			"--page-size 512: want a power of two from 4 KiB to 1 GiB, what hypervisors use (or from 512 B with --any-page-size)", true},
		{"import 256 refused", []string{"trace", "import", "--memory", "32M", "--epoch", "1s", "--page-size", "256", "--any-page-size", "-o", out, in},
			"--page-size 256: want a power of two from 512 B to 1 GiB", true},
		{"import 512", []string{"trace", "import", "--memory", "32M", "--epoch", "1s", "--page-size", "512", "--any-page-size", "-o", out, in},
			"imported 4 epochs, 6 pages", false},
		{"info refused", []string{"trace", "info", out}, "page size 512 is outside the 4096 B to 1 GiB hypervisors use", true},
		{"info", []string{"trace", "info", "--any-page-size", out}, "65536 pages of 512 B", false},
		{"export", []string{"trace", "export", "--any-page-size", out}, "3,0\n", false},
		{"eval file", []string{"predict", "eval", "--warmup", "0", "--any-page-size", out}, "65536 pages (32.0 MiB)", false},
		{"eval csv refused", []string{"predict", "eval", "--memory", "64M", "--page-size", "1024", in}, "--page-size 1024", true},
		{"eval csv", []string{"predict", "eval", "--memory", "64M", "--page-size", "1024", "--warmup", "0", "--any-page-size", in},
			"65536 pages (64.0 MiB)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refusedOrSays(t, tc.args, tc.want, tc.fail)
			if trace.AllowAnyPageSize(false) {
				t.Fatal("--any-page-size outlived its command")
			}
		})
	}
}

// refusedOrSays runs pagecast with args and checks that it fails with one
// line saying want, if fail, or else prints want.
func refusedOrSays(t *testing.T, args []string, want string, fail bool) {
	t.Helper()
	stdout, _, err := runApp(t, args...)
	if fail {
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("err %v, want one line with %q", err, want)
		}
	} else if err != nil || !strings.Contains(stdout, want) {
		t.Fatalf("err %v, stdout %s; want %q", err, stdout, want)
	}
}

// TestPageSizeTakesSizes: --page-size reads a size as --memory does (4K,
// 2M, 1G or bytes), on every command that has it, and its refusals say
// the rule: a power of two from 4 KiB to 1 GiB, from 512 B with
// --any-page-size (walk 129: 1G was refused as "want a whole number, 0 or
// more", and 0 then as "a power of two from 4096").
func TestPageSizeTakesSizes(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "small.csv")
	if err := os.WriteFile(in, []byte("0,0\n1,1\n2,0\n3,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "t.pct")
	const rule = "want a power of two from 4 KiB to 1 GiB, what hypervisors use (or from 512 B with --any-page-size)"
	for _, tc := range []struct {
		name string
		args []string
		want string // in stdout, or in the error if fail
		fail bool
	}{
		{"eval 1G", []string{"predict", "eval", "--memory", "2G", "--page-size", "1G", "--warmup", "0", in}, "2 pages (2.00 GiB)", false},
		{"eval 2M", []string{"predict", "eval", "--memory", "1G", "--page-size", "2M", "--warmup", "0", in}, "512 pages (1.00 GiB)", false},
		{"eval bytes", []string{"predict", "eval", "--memory", "1G", "--page-size", "65536", "--warmup", "0", in}, "16384 pages (1.00 GiB)", false},
		{"import 1G", []string{"trace", "import", "--memory", "1T", "--page-size", "1G", "-o", out, in}, "imported 4 epochs", false},
		{"import 4KiB", []string{"trace", "import", "--memory", "1T", "--page-size", "4KiB", "-o", out, in}, "imported 4 epochs", false},
		{"eval 2G", []string{"predict", "eval", "--memory", "4G", "--page-size", "2G", in}, "--page-size 2G: " + rule, true},
		{"eval 0", []string{"predict", "eval", "--memory", "1G", "--page-size", "0", in}, "--page-size 0: " + rule, true},
		{"eval 3000", []string{"predict", "eval", "--memory", "1G", "--page-size", "3000", in}, "--page-size 3000: " + rule, true},
		{"import 2G", []string{"trace", "import", "--memory", "1T", "--page-size", "2G", "-o", out, in}, "--page-size 2G: " + rule, true},
		{"import 256 any", []string{"trace", "import", "--memory", "1G", "--page-size", "256", "--any-page-size", "-o", out, in},
			"--page-size 256: want a power of two from 512 B to 1 GiB", true},
		{"import not a size", []string{"trace", "import", "--memory", "1G", "--page-size", "big", "-o", out, in}, `--page-size: size "big"`, true},
		{"simulate 2M", []string{"simulate", "--trace", in, "--memory", "1G", "--page-size", "2M", "--mode", "precopy"}, "pages of 2097152 bytes; the engine moves 4096-byte pages", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refusedOrSays(t, tc.args, tc.want, tc.fail)
		})
	}
	stdout, _, err := runApp(t, "trace", "info", out)
	if err != nil || !strings.Contains(stdout, "1.00 TiB, 268435456 pages of 4096 B") {
		t.Errorf("trace info of the import with --page-size 4KiB: %v\n%s", err, stdout)
	}
}

// TestTraceGuestRoundTrip: a CSV keeps no header; exporting a trace of
// pagecast's own guest says so, and trace import --guest pagecast puts
// back what simulate's throttle turns on (walk 119).
func TestTraceGuestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "hotset.csv")
	_, stderr, err := runApp(t, "trace", "export", "-o", csv, simTrace)
	if err != nil || !strings.Contains(stderr, "import it back with --guest pagecast") {
		t.Fatalf("export of a trace of pagecast's guest to CSV: %v, stderr %q", err, stderr)
	}
	for _, guest := range []string{"", "pagecast"} {
		out := filepath.Join(dir, "back"+guest+".pct")
		args := []string{"trace", "import", "--memory", "16M", "--epoch", "250ms", "-o", out}
		if guest != "" {
			args = append(args, "--guest", guest)
		}
		if _, _, err := runApp(t, append(args, csv)...); err != nil {
			t.Fatal(err)
		}
		stdout, _, err := runApp(t, "trace", "info", out)
		if want := map[string]string{"": "guest        not said", "pagecast": "guest        pagecast's own"}[guest]; err != nil || !strings.Contains(stdout, want) {
			t.Errorf("--guest %q: trace info lacks %q: %v\n%s", guest, want, err, stdout)
		}
	}
	if _, _, err := runApp(t, "trace", "import", "--memory", "16M", "--guest", "linux", "-o", filepath.Join(dir, "x.pct"), csv); err == nil ||
		!strings.Contains(err.Error(), `--guest "linux": want pagecast`) {
		t.Errorf("--guest linux: %v", err)
	}
	if _, stderr, _ := runApp(t, "trace", "export", "-o", filepath.Join(dir, "awk.csv"), "../../predictor/testdata/real/awk.pct"); strings.Contains(stderr, "--guest") {
		t.Errorf("export of a Linux guest's trace: %q", stderr)
	}
}

// TestTraceInfoManyDamaged: info lists the first damaged stretches and
// counts the rest, where a 5 MB file of 200 000 one-byte stretches printed
// 12.5 MB of them (walk 148); --all-damage lists every one.
func TestTraceInfoManyDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.pct")
	const epochs = 40
	var es []trace.Epoch
	for i := range uint64(epochs) {
		es = append(es, trace.Epoch{Index: i, Pages: []uint64{i}})
	}
	writeTrace(t, path, trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 100 * time.Millisecond}, es...)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A junk byte before every record but the first: a stretch each.
	records := recordOffsets(data)
	var junk []byte
	for i, at := range records {
		end := len(data)
		if i+1 < len(records) {
			end = records[i+1]
		}
		if i > 0 {
			junk = append(junk, 0)
		} else {
			junk = append(junk, data[:at]...)
		}
		junk = append(junk, data[at:end]...)
	}
	if err := os.WriteFile(path, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runApp(t, "trace", "info", path)
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(stdout, "no record marker")
	more := fmt.Sprintf("… and %d more damaged stretches (%d bytes; --all-damage lists them)", epochs-1-damageListed, epochs-1-damageListed)
	if n != damageListed || !strings.Contains(stdout, "DAMAGED: 39 damaged stretches") || !strings.Contains(stdout, more) {
		t.Errorf("info listed %d stretches, want %d and %q:\n%s", n, damageListed, more, stdout)
	}
	stdout, _, err = runApp(t, "trace", "info", "--all-damage", path)
	if n := strings.Count(stdout, "no record marker"); err != nil || n != epochs-1 {
		t.Errorf("--all-damage listed %d stretches (%v), want %d", n, err, epochs-1)
	}
}

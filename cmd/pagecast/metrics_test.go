package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
)

// lastScrape GETs url every 200 ms, as a Prometheus would scrape it,
// and returns the first body that matches done. With exited set it goes on
// scraping until the process behind url has exited (at most 10 s more).
// It gives up after a minute, returning the last body it read.
// scrapeGet GETs a metrics url as Prometheus does, asking for its
// exposition formats by name: --metrics-linger counts such scrapes only.
func scrapeGet(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	return http.DefaultClient.Do(req)
}

func lastScrape(t *testing.T, url string, done *regexp.Regexp, exited <-chan struct{}) string {
	t.Helper()
	var last, matched string
	deadline := time.Now().Add(time.Minute)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err := scrapeGet(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if matched == "" && done.MatchString(last) {
				matched = last
				if exited == nil {
					return matched
				}
				deadline = time.Now().Add(10 * time.Second)
			}
		}
		select {
		case <-exited:
			if matched != "" {
				return matched
			}
			return last
		default:
		}
	}
	if matched != "" {
		return matched
	}
	return last
}

// TestMigrateMetricsQEMUEngine: pagecast migrate --metrics follows QEMU's
// own migration through query-migrate, exports how it ended, and stops
// serving once that has been scraped.
func TestMigrateMetricsQEMUEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startQEMU(t, "hotset:delay=25000", "")
	uri := freeTCP(t)
	startQEMU(t, "hotset:delay=25000", uri)
	addr := freeAddr(t)
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu",
		"--metrics", addr, "--name", "q1", "--metrics-linger", "30s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	body := lastScrape(t, "http://"+addr+"/metrics", regexp.MustCompile(`pagecast_migration_succeeded\{[^}]*\} 1`), exited)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("pagecast migrate still runs long after its end was first scraped:\n%s", out.String())
	}
	if waitErr != nil {
		t.Fatalf("pagecast migrate: %v\n%s", waitErr, out.String())
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`pagecast_migration_info\{engine="qemu",migration="[0-9T:.-]+Z",mode="precopy",vm="q1"\} 1`),
		regexp.MustCompile(`pagecast_migration_status\{[^}]*status="completed"[^}]*\} 1`),
		regexp.MustCompile(`pagecast_migration_data_total_bytes\{[^}]*\} 6\.7[0-9]*e\+07`), // 64 MiB and QEMU's other RAM blocks
		regexp.MustCompile(`pagecast_migration_data_remaining_bytes\{[^}]*\} 0`),
		regexp.MustCompile(`pagecast_migration_round\{[^}]*\} [1-9]`),
		regexp.MustCompile(`pagecast_migration_downtime_seconds\{[^}]*\} `),
		regexp.MustCompile(`pagecast_migration_end_time_seconds\{[^}]*\} `),
		regexp.MustCompile(`pagecast_migration_failed\{[^}]*\} 0`),
	} {
		if !want.MatchString(body) {
			t.Errorf("the last scrape lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "pagecast_migration_deferred_pages") {
		t.Error("deferred pages exported for QEMU's engine, which defers nothing")
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = strings.NewReader(body)
		if msg, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(msg)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, msg)
		}
	}
}

// TestMigrateLingerSignal: a signal while migrate --metrics lingers for
// Prometheus ends the wait, and migrate exits as the migration did: it was
// killed, exit 143 after a completed migration (walk 65).
func TestMigrateLingerSignal(t *testing.T) {
	src, _, uri := qemuPair(t, "hotset:delay=25000")
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu",
		"--metrics", freeAddr(t), "--metrics-linger", "60s", "--quiet", "--json")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(stderr.String(), "Ctrl-C stops the wait"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("migrate never lingered:\n%s\n%s", stdout.String(), stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	switch exited, err := waitExit(cmd, 10*time.Second); {
	case !exited:
		t.Fatal("migrate lingered on after SIGTERM")
	case err != nil:
		t.Errorf("migrate stopped while lingering after a completed migration: %v\n%s", err, stderr.String())
	}
	if o := outcomeOf(t, stdout.String()); o.Status != migrator.StatusCompleted {
		t.Errorf("outcome: %s", stdout.String())
	}
}

// TestVMRunMetrics: pagecast vm run --metrics exports the migrations out
// of pagecast's monitor (KVM).
func TestVMRunMetrics(t *testing.T) {
	addr := freeAddr(t)
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset:hot=512", "--metrics", addr, "--name", "kvm1")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	if out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "predictive",
		"--bandwidth", "64MiB/s").CombinedOutput(); err != nil {
		t.Fatalf("pagecast migrate: %v\n%s", err, out)
	}
	body := lastScrape(t, "http://"+addr+"/metrics", regexp.MustCompile(`pagecast_migration_succeeded\{[^}]*\} 1`), nil)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`pagecast_migration_info\{engine="pagecast",migration="[0-9T:.-]+Z",mode="predictive",vm="kvm1"\} 1`),
		regexp.MustCompile(`pagecast_migration_succeeded\{[^}]*\} 1`),
		regexp.MustCompile(`pagecast_migration_page_deferrals_total\{[^}]*\} `),
		regexp.MustCompile(`pagecast_migration_bandwidth_limit_bytes_per_second\{[^}]*\} 6\.7108864e\+07`),
	} {
		if !want.MatchString(body) {
			t.Errorf("vm run's metrics lack %s:\n%s", want, body)
		}
	}
}

func TestMetricsFlagRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "run", "--monitor", "qemu", "--metrics", "127.0.0.1:0"}, "pagecast migrate --metrics"},
		{[]string{"vm", "run", "--monitor", "pagecast", "--metrics", "127.0.0.1:0"}, "--metrics needs --qmp"},
		{[]string{"profile", "--qmp", "unix:/nonexistent.sock", "--name", "web-1"}, "--name is the VM's name in the metrics' vm label: give --metrics too"},
	} {
		_, _, err := runApp(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pagecast %s: %v, want an error mentioning %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestMigrateMetricsFailureFirst: a migrate with --metrics that fails
// before any migration began (its source's QMP socket is not there) says
// why and does not linger with metrics of nothing (it said it served them
// until scraped, and that the end was scraped 0 times of 2). Since its
// metrics wait for QEMU's -name for their vm label, they never start.
func TestMigrateMetricsFailureFirst(t *testing.T) {
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+filepath.Join(t.TempDir(), "none.sock"), "--to", "tcp:127.0.0.1:1",
		"--mode", "precopy", "--bandwidth", "16MiB/s", "--metrics", freeAddr(t), "--metrics-linger", "2s")
	if err == nil || !strings.Contains(err.Error(), "connect to QMP socket") {
		t.Fatalf("err %v, want the QMP socket's", err)
	}
	if strings.Contains(stderr, "serving the metrics on") || strings.Contains(stderr, "scraped") {
		t.Errorf("the failure is not said first, or the metrics of no migration linger:\n%s", stderr)
	}
}

// TestMigrateMetricsUnscraped: metrics nothing scrapes are said to be, so
// that a user whose Prometheus is not pointed at them learns it.
func TestMigrateMetricsUnscraped(t *testing.T) {
	vm := startVMRunProc(t, "--memory", "16M")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+vm.sock, "--to", freeTCP(t), "--mode", "precopy",
		"--metrics", freeAddr(t), "--metrics-linger", "1s").CombinedOutput()
	if err == nil {
		t.Fatalf("a migration to nobody succeeded:\n%s", out)
	}
	for _, want := range []string{"the migration ended before a Prometheus scraped the metrics on", "no Prometheus scraped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestMetricsConnsBounded: --metrics holds at most metricsConns
// connections at once, where every kept-alive connection was kept for
// ever (20 000 of them used up a migration's file descriptors and failed
// its switch-over), and a scrape beside them is answered, the longest
// idle one closed to make room.
func TestMetricsConnsBounded(t *testing.T) {
	l, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	exp := migrationmetrics.New("vm")
	stop := serveMetrics(l, exp)
	defer stop()
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	const clients = 4 * metricsConns
	var conns []net.Conn
	for range clients {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	time.Sleep(500 * time.Millisecond)
	// Held open: the least of a few looks, as a connection closed to make
	// room keeps its descriptor until its reader wakes, which a loaded
	// machine delays (one look under the suite's load counted 69).
	served := clients
	for range 5 {
		served = min(served, fds()-before-clients)
		time.Sleep(50 * time.Millisecond)
	}
	if served > metricsConns+4 {
		t.Errorf("%d connections held open by the server for %d clients, want at most %d", served, clients, metricsConns)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "go_goroutines") {
		t.Errorf("a scrape beside them: %s %.200s", resp.Status, b)
	}
}

// TestVMNameUTF8: a vm label that is not UTF-8 becomes valid, so that
// Prometheus takes the scrape (it failed it whole, for every series).
func TestVMNameUTF8(t *testing.T) {
	app := newApp()
	var got string
	app.Commands = []*cli.Command{{Name: "x", Flags: migrationMetricsFlags(), Action: func(c *cli.Context) error {
		got = vmName(c, "/tmp/q\xfe.sock", nil)
		return nil
	}}}
	if err := app.Run([]string{"pagecast", "x"}); err != nil {
		t.Fatal(err)
	}
	if got != "q\uFFFD" {
		t.Errorf("vm label %q, want %q", got, "q\uFFFD")
	}
}

// nameRunner answers query-name with name ("" : QEMU without -name, which
// returns {}), and anything else with CommandNotFound.
type nameRunner string

func (n nameRunner) Run(cmd []byte) ([]byte, error) {
	if !strings.Contains(string(cmd), "query-name") {
		return []byte(`{"error":{"class":"CommandNotFound","desc":"no"}}`), nil
	}
	if n == "" {
		return []byte(`{"return":{}}`), nil
	}
	return []byte(`{"return":{"name":"` + string(n) + `"}}`), nil
}

// TestVMNameFromQEMU: the vm label is --name, else QEMU's -name, else the
// socket's name: under libvirt every socket is monitor.sock, and every VM
// was "monitor" (walk 76).
func TestVMNameFromQEMU(t *testing.T) {
	for _, tc := range []struct {
		args []string
		mon  qemu.Runner
		want string
	}{
		{nil, nameRunner("web1"), "web1"},
		{nil, nameRunner(""), "monitor"},
		{nil, nil, "monitor"},
		{[]string{"--name", "db"}, nameRunner("web1"), "db"},
	} {
		app := newApp()
		var got string
		app.Commands = []*cli.Command{{Name: "x", Flags: migrationMetricsFlags(), Action: func(c *cli.Context) error {
			got = vmName(c, "/var/lib/libvirt/qemu/domain-1-web1/monitor.sock", tc.mon)
			return nil
		}}}
		if err := app.Run(append([]string{"pagecast", "x"}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%v, query-name %v: vm %q, want %q", tc.args, tc.mon, got, tc.want)
		}
	}
}

// TestScrapesCounted: --metrics-linger counts a scraper's GETs, not a
// curl's or a health check's (a curl every 0.25 s ended migrate's wait at
// once, and a failed migration's end never reached Prometheus).
func TestScrapesCounted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop, scrapes := serveMetricsCounted(l)
	defer stop()
	url := "http://" + l.Addr().String() + "/metrics"
	for range 3 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := scrapes(); n != 0 {
		t.Errorf("3 plain GETs counted as %d scrapes", n)
	}
	head, _ := http.NewRequest(http.MethodHead, url, nil)
	head.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	if resp, err := http.DefaultClient.Do(head); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if n := scrapes(); n != 0 {
		t.Errorf("a HEAD counted as a scrape (%d)", n)
	}
	// Other methods are refused, saying which are taken (walk 52: a POST
	// or DELETE got the metrics).
	for _, m := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
		req, _ := http.NewRequest(m, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("%s /metrics: %s, Allow %q; want 405 allowing GET", m, resp.Status, resp.Header.Get("Allow"))
		}
	}
	resp, err := scrapeGet(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := scrapes(); n != 1 {
		t.Errorf("a Prometheus scrape counted as %d", n)
	}
	// Prometheus told its scrape_protocols: protobuf alone, or text 1.0.0.
	for i, accept := range []string{
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,*/*;q=0.1",
		"text/plain;version=1.0.0;escaping=allow-utf-8,*/*;q=0.1",
	} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := scrapes(); n != uint64(i+2) {
			t.Errorf("a scrape accepting %q not counted (%d)", accept, n)
		}
	}
}

// TestExportedEnd: what the metrics are told when Wait returns an error. A
// migration pagecast stops following while it goes on (two interrupts in
// post-copy, a refused cancel after the commit) or whose monitor went
// silent is not made a failure: that fired PagecastMigrationFailed for a
// guest running on the destination (found by a review walk). A failure
// keeps the migration's total time and pagecast section.
func TestExportedEnd(t *testing.T) {
	post := migrator.Info{Status: migrator.StatusPostcopy, TotalTime: 42000,
		RAM: &migrator.RAMStats{Transferred: 1 << 20}, Pagecast: &migrator.Extra{Mode: "tsmc", Round: 2}}
	for _, err := range []error{
		fmt.Errorf("wait: %w", &migrator.Detached{Status: migrator.StatusPostcopy}),
		&migrator.Detached{Status: migrator.StatusDevice, Committed: true},
		fmt.Errorf("wait for migration: %w; the migration's state is unknown", migrator.ErrMonitorSilent),
	} {
		if i, ok := exported(post, err); ok {
			t.Errorf("%v: exported as %q, want the last state seen kept", err, i.Status)
		}
	}
	i, ok := exported(post, errors.New("query-migrate: connection reset"))
	if !ok || i.Status != migrator.StatusFailed || i.TotalTime != 42000 || i.Pagecast == nil || !strings.Contains(i.ErrorDesc, "connection reset") {
		t.Errorf("a failure exported as %v %+v, want failed with its total time, pagecast section and error", ok, i)
	}
	done := migrator.Info{Status: migrator.StatusCompleted, TotalTime: 5}
	if i, ok := exported(done, errors.New("verify: mismatch")); !ok || i.Status != migrator.StatusCompleted {
		t.Errorf("a finished migration with an error exported as %v %+v, want it as it ended", ok, i)
	}
	if i, ok := exported(post, nil); !ok || i.Status != migrator.StatusPostcopy {
		t.Errorf("no error: exported as %v %+v", ok, i)
	}
}

// TestMigrateMetricsTimeout: a migration --timeout cancelled is exported
// failed, with what it had sent, by either engine: it was cancelled, as a
// Ctrl-C's is, which the failure alert skips, and QEMU's engine exported
// no bytes and no time (walk 89).
func TestMigrateMetricsTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	for _, engine := range []string{engineQEMU, enginePagecast} {
		t.Run(engine, func(t *testing.T) {
			src, _, to := enginePair(t, engine)
			addr := freeAddr(t)
			cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--engine", engine,
				"--bandwidth", "1MiB/s", "--timeout", "2s", "--metrics", addr, "--metrics-linger", "30s", "--quiet")
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			// Waited for by the status itself: failed counts a cancel too,
			// and a scrape between the two would have read cancelled
			// (review 90).
			body := lastScrape(t, "http://"+addr+"/metrics", regexp.MustCompile(`pagecast_migration_status\{[^}]*status="failed"[^}]*\} 1`), exited)
			<-exited
			for _, want := range []*regexp.Regexp{
				regexp.MustCompile(`pagecast_migration_status\{[^}]*status="failed"[^}]*\} 1`),
				regexp.MustCompile(`pagecast_migration_data_processed_bytes\{[^}]*\} [1-9]`),
				regexp.MustCompile(`pagecast_migration_total_time_seconds\{[^}]*\} [1-9]`),
			} {
				if !want.MatchString(body) {
					t.Errorf("the last scrape lacks %s:\n%s\n%s", want, body, out.String())
				}
			}
		})
	}
}

// TestNameRefusesControlCharacters: every command's --name refuses a
// newline or a tab, which made two lines of one in the tables and logs
// (walk 129), and takes a name with spaces and non-ASCII letters.
func TestNameRefusesControlCharacters(t *testing.T) {
	for _, args := range [][]string{
		{"predict", "serve", "--trace", "x.pct"},
		{"profile", "--pid", "1", "--metrics", ":0"},
		{"migrate", "--qmp", "unix:/nonexistent", "--to", "tcp:127.0.0.1:1"},
		{"vm", "run", "--monitor", "qemu"},
	} {
		for _, name := range []string{"a\nb", "a\tb", "a\x1bb", "a\u2028b", "a\u2029b", "bad\xffutf"} {
			_, stderr, err := runApp(t, append(args, "--name", name)...)
			if err == nil || !strings.Contains(err.Error()+stderr, "want a name without control characters") && !strings.Contains(err.Error()+stderr, "not UTF-8") {
				t.Errorf("%s --name %q: %v %s, want it refused", strings.Join(args[:2], " "), name, err, stderr)
			}
		}
	}
	app := newApp()
	var got string
	app.Commands = []*cli.Command{{Name: "x", Flags: migrationMetricsFlags(), Action: func(c *cli.Context) error {
		got = vmName(c, "/tmp/q.sock", nil)
		return nil
	}}}
	if err := app.Run([]string{"pagecast", "x", "--name", "web 1 café"}); err != nil || got != "web 1 café" {
		t.Errorf("--name %q: %v, vm label %q", "web 1 café", err, got)
	}
}

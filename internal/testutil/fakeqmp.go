package testutil

import (
	"bufio"
	"encoding/json"
	"net"
	"sync"
	"testing"
)

// FakeQMP is a fake QEMU monitor on a unix socket: it greets each client
// as QEMU 7.2 does, then answers each command with the line reply gives
// for it (n: how many times this client has sent that command); a reply
// of "" and the monitor falls silent for that client, as a QEMU stopped
// with SIGSTOP or stuck does. It serves until the test ends.
type FakeQMP struct {
	mu   sync.Mutex
	seen []string
}

// Commands is every command the clients have sent, in order.
func (f *FakeQMP) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// ServeFakeQMP starts a FakeQMP on sock.
func ServeFakeQMP(t testing.TB, sock string, reply func(cmd string, n int) string) *FakeQMP {
	t.Helper()
	f := &FakeQMP{}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(`{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0},"package":""},"capabilities":[]}}` + "\n"))
				dec := json.NewDecoder(bufio.NewReader(c))
				count := map[string]int{}
				for {
					var m struct {
						Execute string `json:"execute"`
					}
					if dec.Decode(&m) != nil {
						return
					}
					f.mu.Lock()
					f.seen = append(f.seen, m.Execute)
					f.mu.Unlock()
					count[m.Execute]++
					out := reply(m.Execute, count[m.Execute])
					if out == "" {
						<-done // silent from here on
						return
					}
					c.Write([]byte(out + "\n"))
				}
			}()
		}
	}()
	return f
}

// SilentAfterCapabilities is a FakeQMP's reply for a monitor that takes
// qmp_capabilities and then answers nothing.
func SilentAfterCapabilities(cmd string, _ int) string {
	if cmd == "qmp_capabilities" {
		return `{"return":{}}`
	}
	return ""
}

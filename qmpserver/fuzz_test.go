package qmpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"testing"
)

// byteConn is a net.Conn whose reads come from a byte slice.
type byteConn struct {
	net.Conn
	r *bytes.Reader
}

func (c byteConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// FuzzClientRead feeds a client's reading loop arbitrary bytes: it must never
// panic, and every line it queues must be one ASCII line of a JSON object
// with a "return" or an "error" member, as QEMU's are.
func FuzzClientRead(f *testing.F) {
	for _, s := range []string{
		`{"execute":"qmp_capabilities"}{"execute":"echo","arguments":{"msg":"hi"},"id":1}`,
		`{'execute':'qmp_capabilities','id':'a\'b'}` + "\n" + `{"execute":"query-version","arguments":{"x":1}}`,
		`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`,
		`[1,2]"str"123 true}]{"id":{"a":[1]},"execute":5}`,
		"{\"execute\":\"echo\",\"arguments\":{\"msg\":\"\\u00e9\xe2\x82\xac\\ud83d\\ude00\"},\"id\":\"\xf0\x9f\x98\x80\"}\x01{",
		`{"execute":"qmp_capabilities"}{"execute":"echo","arguments":{"msg":"a","MSG":"b"}}`,
		`{"execute":"qmp_capabilities"}{"execute":"echo","arguments":{"msg":1e999}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := New(nil, "fuzz")
		srv.Handle("echo", func(_ context.Context, raw json.RawMessage) (any, error) {
			a, err := Args[struct {
				Msg string `json:"msg"`
				N   *int   `json:"n,omitempty"`
			}](raw)
			if err != nil {
				return nil, err
			}
			return a, nil
		})
		c := &client{srv: srv, conn: byteConn{r: bytes.NewReader(in)}, log: srv.log, out: make(chan outgoing, 2*len(in)+8)}
		c.read(context.Background())
		close(c.out)
		for msg := range c.out {
			line := msg.line
			body, ok := bytes.CutSuffix(line, []byte("\r\n"))
			if !ok || bytes.ContainsAny(body, "\r\n") {
				t.Fatalf("reply %q is not one CRLF-ended line", line)
			}
			for _, b := range body {
				if b >= 0x80 {
					t.Fatalf("reply %q is not ASCII", line)
				}
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("reply %q is not a JSON object: %v", line, err)
			}
			_, isRet := m["return"]
			_, isErr := m["error"]
			if isRet == isErr {
				t.Fatalf("reply %q has neither or both of return and error", line)
			}
		}
	})
}

package main

import (
	"net"
	"testing"
)

// TestServedAddr: predict serve names the address it answers on as the
// user gave it, with the port the kernel picked.
func TestServedAddr(t *testing.T) {
	for _, tc := range []struct{ listen, got, want string }{
		{"0.0.0.0:19472", "[::]:19472", "0.0.0.0:19472"},
		{"127.0.0.1:0", "127.0.0.1:40123", "127.0.0.1:40123"},
		{":9000", "[::]:9000", "localhost:9000"},
	} {
		got, err := net.ResolveTCPAddr("tcp", tc.got)
		if err != nil {
			t.Fatal(err)
		}
		if a := servedAddr(tc.listen, got); a != tc.want {
			t.Errorf("%s listening as %s: %s, want %s", tc.listen, tc.got, a, tc.want)
		}
		// Where it listens on every interface, it says so.
		if note := everyInterface(got); (note != "") != (got.IP.IsUnspecified()) || (note != "") == (tc.listen == "127.0.0.1:0") {
			t.Errorf("%s listening as %s: note %q", tc.listen, tc.got, note)
		}
	}
}

// Package qmpclient is a client of QEMU's machine protocol (QMP) for QEMU
// and for pagecast's own monitor, with go-qemu's qmp.Monitor interface so
// that the rest of pagecast (and go-qemu's typed API) takes it unchanged.
//
// It replaces go-qemu's qmp.SocketMonitor, whose Run hands back a slice of
// its reader's bufio.Scanner buffer: the reader goroutine scans the next
// line (an event QEMU sends right after a reply, as it does when a
// migration starts) into that buffer while the caller still decodes the
// reply (digitalocean/go-qemu#226; the race detector caught it in
// `pagecast migrate --mode auto`). Here every line is read into its own
// slice. Events that arrive during the capabilities handshake are skipped
// rather than taken for its reply, and events nobody reads are dropped once
// a small queue is full instead of stalling the replies behind them.
package qmpclient

// Package qmpserver serves the QEMU Machine Protocol (QMP) on a unix socket, so
// that pagecast's own virtual machine monitor is driven exactly like QEMU: by
// github.com/digitalocean/go-qemu's qmp.SocketMonitor and its typed qmp/raw API,
// by QEMU's qmp-shell, or by hand with socat.
//
// The package knows the protocol, not the machine. The monitor registers one
// Handler per command (query-status, stop, cont, migrate, the x-pagecast-*
// extensions …) with Server.Handle and reports state changes with Server.Emit;
// this package does the rest:
//
//   - the greeting, which advertises QEMU 7.2.0 (the QEMU these machines run and
//     whose command set the monitor mirrors) with package "pagecast …" and no
//     optional capabilities (no out-of-band execution);
//   - capabilities negotiation: until a client has run qmp_capabilities every other
//     command fails with CommandNotFound, and it gets no events;
//   - the built-in commands qmp_capabilities, query-commands and query-version;
//   - framing as QEMU does it: input is a stream of JSON values, not of lines (a
//     command ends at its closing brace, newlines are optional), QEMU's
//     single-quoted strings are accepted, an ASCII control character or a 0xFF
//     byte abandons a half-read command, and output is one ASCII JSON object per
//     CRLF-terminated line;
//   - replies in QEMU's shapes and format, {"return": …} or {"error": {"class",
//     "desc"}}, with the command's "id" echoed verbatim and QEMU 7.2's error
//     messages (JSON syntax errors aside, which encoding/json words); malformed
//     input gets an error reply and does not end the connection;
//   - events with timestamps, queued per client so that a client that stops
//     reading loses events instead of stalling the monitor.
//
// It serves MaxClients (64) at once; one more is told so in a QMP error
// and closed. Each client has its own goroutine: its commands run one after the other in the
// order sent, while commands of different clients run concurrently, so handlers
// must guard the state they share. A command may not exceed 1 MiB; a client that
// sends more gets an error and is disconnected.
//
// go-qemu's SocketMonitor has a data race (digitalocean/go-qemu#226, open): it
// hands Run the buffer of a reply that its reader goroutine reuses for the
// next line, so an event arriving while Run decodes a reply can corrupt it.
// Against QEMU as against this server, a go-qemu client that runs commands
// while events flow needs a fixed go-qemu.
//
// Listen creates the socket with mode 0600 and refuses to take over a socket
// another process is serving (ErrInUse) or a path that is not a socket.
//
// A typical monitor:
//
//	srv := qmpserver.New(logger, version)
//	srv.Handle("query-status", func(ctx context.Context, args json.RawMessage) (any, error) {
//		return vm.Status(), nil
//	})
//	srv.Handle("stop", func(ctx context.Context, args json.RawMessage) (any, error) {
//		vm.Pause()
//		srv.Emit("STOP", nil)
//		return nil, nil
//	})
//	l, err := qmpserver.Listen(path)
//	if err != nil {
//		return err
//	}
//	return srv.Serve(ctx, l)
package qmpserver

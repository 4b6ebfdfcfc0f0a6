package qmpclient

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/internal/proc"
)

// Peer is a process connected to a unix socket's listener.
type Peer struct {
	PID     int
	Command string // its command line, spaces between the arguments
}

func (p Peer) String() string { return fmt.Sprintf("pid %d (%s)", p.PID, p.Command) }

// Holders names the processes connected to the unix socket listening at
// path, other than this one: holding, those whose connection the listener
// has accepted (a QMP socket serves one); waiting, those queued behind
// them. It asks the kernel (sock_diag) for the connections made to that
// socket and their other ends, and /proc for who has those. It is what a
// QMP socket that does not greet is asked, so that the error says who
// holds it (walk 69: a profile held it, and a migrate was told only "is
// another client connected?"). Processes of other users are left out
// where /proc does not show their files.
func Holders(path string) (holding, waiting []Peer, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, nil, fmt.Errorf("stat %s: %w", path, err)
	}
	socks, err := unixSockets()
	if err != nil {
		return nil, nil, err
	}
	dev := unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)
	owners := socketOwners()
	self := os.Getpid()
	seen := make(map[int]bool)
	add := func(list *[]Peer, ino uint32) {
		if p, ok := owners[ino]; ok && p.PID != self && !seen[p.PID] {
			seen[p.PID] = true
			*list = append(*list, p)
		}
	}
	// The listener's end of an accepted connection is bound to the
	// socket's file and in its process's files; the listener's icons
	// are the clients in its backlog, waiting.
	for _, s := range socks {
		// Both: each tmpfs numbers its inodes from 2, so sockets on
		// two mounts share numbers (review 71).
		if s.vfsIno != uint32(st.Ino) || s.vfsDev != dev {
			continue
		}
		if _, accepted := owners[s.ino]; accepted && s.peer != 0 {
			add(&holding, s.peer)
		}
		for _, i := range s.icons {
			add(&waiting, i)
		}
	}
	return holding, waiting, nil
}

// Listener is the process listening on the unix socket at path; false
// where it cannot be told.
func Listener(path string) (Peer, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return Peer{}, false
	}
	socks, err := unixSockets()
	if err != nil {
		return Peer{}, false
	}
	dev := unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)
	owners := socketOwners()
	for _, s := range socks {
		// Of the sockets bound to the file, the listener has no peer.
		if s.vfsIno == uint32(st.Ino) && s.vfsDev == dev && s.peer == 0 {
			if p, ok := owners[s.ino]; ok {
				return p, true
			}
		}
	}
	return Peer{}, false
}

// unixSocket is what sock_diag says of one unix socket.
type unixSocket struct {
	ino, peer, vfsIno uint32
	vfsDev            uint32   // the kernel's own encoding: major<<20 | minor
	icons             []uint32 // a listener's: the clients in its backlog
}

// sock_diag's unix requests and attributes (linux/unix_diag.h).
const (
	udiagShowVFS   = 0x2
	udiagShowPeer  = 0x4
	udiagShowIcons = 0x8
	unixDiagVFS    = 1
	unixDiagPeer   = 2
	unixDiagIcons  = 3
)

// unixSockets lists the unix sockets, with their peers, from sock_diag.
func unixSockets() ([]unixSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// nlmsghdr (16 bytes), then unix_diag_req: family, protocol, pad,
	// states, ino, show, cookie[2].
	req := make([]byte, 16+24)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[16] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[20:], ^uint32(0)) // every state
	binary.NativeEndian.PutUint32(req[28:], udiagShowVFS|udiagShowPeer|udiagShowIcons)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	var socks []unixSocket
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return socks, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return socks, nil
			}
			// unix_diag_msg: family, type, state, pad, ino, cookie[2].
			if len(m.Data) < 16 {
				continue
			}
			s := unixSocket{ino: binary.NativeEndian.Uint32(m.Data[4:])}
			for a := m.Data[16:]; len(a) >= 4; {
				l := int(binary.NativeEndian.Uint16(a))
				if l < 4 || l > len(a) {
					break
				}
				switch v := a[4:l]; binary.NativeEndian.Uint16(a[2:]) {
				case unixDiagVFS:
					if len(v) >= 8 {
						s.vfsIno = binary.NativeEndian.Uint32(v)
						s.vfsDev = binary.NativeEndian.Uint32(v[4:])
					}
				case unixDiagPeer:
					if len(v) >= 4 {
						s.peer = binary.NativeEndian.Uint32(v)
					}
				case unixDiagIcons:
					for ; len(v) >= 4; v = v[4:] {
						s.icons = append(s.icons, binary.NativeEndian.Uint32(v))
					}
				}
				a = a[min(len(a), (l+3)&^3):]
			}
			socks = append(socks, s)
		}
	}
}

// socketOwners maps socket inodes to a process that has them open
// (proc.SocketPIDs), with its command line.
func socketOwners() map[uint32]Peer {
	owners, commands := make(map[uint32]Peer), make(map[int]string)
	for ino, pid := range proc.SocketPIDs() {
		cmd, ok := commands[pid]
		if !ok {
			cmd = proc.Command(pid)
			commands[pid] = cmd
		}
		owners[uint32(ino)] = Peer{PID: pid, Command: cmd}
	}
	return owners
}

package vmm

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
)

const com1 = 0x3f8

// serialPort turns the guest's COM1 output into log lines.
type serialPort struct {
	mu   sync.Mutex
	line bytes.Buffer
	out  io.Writer // optional copy of every complete line
	log  *slog.Logger
}

func (s *serialPort) writeByte(b byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == '\r' {
		return
	}
	if b != '\n' && s.line.Len() < 4096 {
		s.line.WriteByte(b)
		return
	}
	line := s.line.String()
	s.line.Reset()
	s.log.Info("guest serial", "line", line)
	if s.out != nil {
		_, _ = io.WriteString(s.out, line+"\n")
	}
}

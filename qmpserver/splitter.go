package qmpserver

import (
	"errors"
	"fmt"
)

// maxInput bounds one JSON value a client sends: QMP commands are small, and
// a client sending more is broken or hostile.
const maxInput = 1 << 20

// maxNesting bounds how deeply a client may nest objects and arrays, as QEMU does.
const maxNesting = 1024

// errInputTooLarge ends a connection whose client sent a value over maxInput.
var errInputTooLarge = fmt.Errorf("QMP input exceeds %d bytes", maxInput)

// A splitter cuts the byte stream a client sends into JSON values the way QEMU's
// JSON streamer does: a value ends where its outermost brace or bracket closes,
// whatever follows, so commands need no newline between them (go-qemu sends
// none) and may span lines. It does not parse values, it only tracks strings and
// nesting; encoding/json parses each complete value.
//
// Like QEMU it accepts 'single-quoted' strings and the escape \' in either kind
// of string; it rewrites them into standard JSON. Like QEMU it abandons a value
// at an ASCII control character other than tab, CR and LF, or at the bytes 0xFE
// and 0xFF, which never occur in UTF-8, and reports an error, even when no
// value was pending; clients send one to bring the parser back to a known
// state.
type splitter struct {
	buf    []byte // the value read so far, in standard JSON
	depth  int    // open braces and brackets
	quote  byte   // the quote of the string being read, or 0
	escape bool   // the previous byte was a backslash in a string
	bare   bool   // reading a top-level number or keyword
	skip   bool   // after an error, skipping to the end of the line
}

// feed consumes one byte. It calls value for each complete JSON value and
// parseErr for input that cannot be one, then carries on with the following
// bytes. It returns errInputTooLarge when a value grows beyond maxInput; the
// splitter is of no further use then.
func (s *splitter) feed(c byte, value func([]byte), parseErr func(error)) error {
	if s.skip {
		if c == '\n' || isReset(c) {
			s.skip = false
		}
		return nil
	}
	if s.bare {
		if isBare(c) {
			return s.add(c)
		}
		s.emit(value)
	}
	if s.quote != 0 {
		return s.feedString(c, value, parseErr)
	}
	switch {
	case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		if s.depth > 0 {
			return s.add(c)
		}
	case isReset(c):
		s.reset()
		parseErr(fmt.Errorf("JSON parse error, stray '\\x%02x'", c))
	case c == '"' || c == '\'':
		s.quote = c
		return s.add('"')
	case c == '{' || c == '[':
		s.depth++
		if s.depth > maxNesting {
			s.reset()
			s.skip = true
			parseErr(errors.New("JSON parse error, nesting too deep"))
			return nil
		}
		return s.add(c)
	case c == '}' || c == ']':
		if s.depth == 0 {
			parseErr(fmt.Errorf("JSON parse error, stray '%c'", c))
			return nil
		}
		s.depth--
		if err := s.add(c); err != nil {
			return err
		}
		if s.depth == 0 {
			s.emit(value)
		}
	case s.depth == 0 && (c == ',' || c == ':'):
		parseErr(fmt.Errorf("JSON parse error, stray '%c'", c))
	default:
		if s.depth == 0 {
			s.bare = true
		}
		return s.add(c)
	}
	return nil
}

// feedString consumes one byte inside a string.
func (s *splitter) feedString(c byte, value func([]byte), parseErr func(error)) error {
	if c < 0x20 || c >= 0xFE {
		s.reset()
		parseErr(fmt.Errorf("JSON parse error, stray '\\x%02x' in string", c))
		return nil
	}
	if s.escape {
		s.escape = false
		if c == '\'' {
			return s.add('\'')
		}
		return s.add('\\', c) // encoding/json judges the escape
	}
	switch {
	case c == '\\':
		s.escape = true
	case c == s.quote:
		s.quote = 0
		if err := s.add('"'); err != nil {
			return err
		}
		if s.depth == 0 {
			s.emit(value)
		}
	case c == '"': // inside a single-quoted string
		return s.add('\\', '"')
	default:
		return s.add(c)
	}
	return nil
}

// flush hands over a top-level number or keyword cut short by the end of input.
// An unfinished object is dropped, as QEMU drops it.
func (s *splitter) flush(value func([]byte)) {
	if s.bare {
		s.emit(value)
	}
	s.reset()
}

func (s *splitter) add(b ...byte) error {
	if len(s.buf)+len(b) > maxInput {
		return errInputTooLarge
	}
	s.buf = append(s.buf, b...)
	return nil
}

// emit hands over a copy of the complete value: handlers may keep their
// arguments.
func (s *splitter) emit(value func([]byte)) {
	v := append([]byte(nil), s.buf...)
	s.reset()
	value(v)
}

func (s *splitter) reset() {
	s.buf = s.buf[:0]
	if cap(s.buf) > 64<<10 {
		s.buf = nil // do not hold on to the memory of one huge command
	}
	s.depth = 0
	s.quote = 0
	s.escape = false
	s.bare = false
}

// isReset reports whether c is a byte that abandons a partial value: an ASCII
// control character other than tab, CR and LF, or a byte UTF-8 never uses.
func isReset(c byte) bool {
	return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c >= 0xFE
}

// isBare reports whether c continues a top-level number or keyword.
func isBare(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '{', '}', '[', ']', ',', ':', '"', '\'':
		return false
	}
	return !isReset(c)
}

package qmpserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// A request is a parsed command: {"execute": name, "arguments": {…}, "id": …}.
type request struct {
	name string
	args json.RawMessage // never empty: {} when the client sent none
	id   json.RawMessage // as the client sent it, or nil
}

// parseRequest checks a JSON value from the client as QEMU does and returns
// the command in it, or the error to reply. The request's id is set whenever
// the value is an object, so that errors are matched to their commands too.
func parseRequest(raw []byte) (request, *Error) {
	req := request{args: json.RawMessage("{}")}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, new(json.RawMessage)); err != nil {
		return req, GenericError("JSON parse error, %v", err)
	}
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '{' {
		return req, GenericError("QMP input must be a JSON object")
	}
	if err := json.Unmarshal(raw, &members); err != nil {
		return req, GenericError("JSON parse error, %v", err)
	}
	req.id = members["id"]

	keys := make([]string, 0, len(members))
	for k := range members {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := members[k]
		switch k {
		case "execute":
			if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &req.name) != nil {
				return req, GenericError("QMP input member 'execute' must be a string")
			}
		case "arguments":
			if len(v) == 0 || v[0] != '{' {
				return req, GenericError("QMP input member 'arguments' must be an object")
			}
			req.args = v
		case "id":
		default: // "exec-oob" included: out-of-band execution is not offered
			return req, GenericError("QMP input member '%s' is unexpected", k)
		}
	}
	if _, ok := members["execute"]; !ok {
		return req, GenericError("QMP input lacks member 'execute'")
	}
	return req, nil
}

// replyError returns the QMP error to reply for a handler's error: an *Error
// in err's chain gives the class, err.Error() the description.
func replyError(err error) *Error {
	var qerr *Error
	if errors.As(err, &qerr) && qerr != nil {
		if err == error(qerr) {
			return qerr
		}
		return &Error{Class: qerr.Class, Desc: err.Error()}
	}
	return &Error{Class: ClassGenericError, Desc: err.Error()}
}

// encodeReturn marshals a handler's result; nil, and whatever marshals to
// null, become {}: QMP never returns null.
func encodeReturn(result any) (json.RawMessage, error) {
	if result == nil {
		return json.RawMessage("{}"), nil
	}
	b, err := marshal(result)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return json.RawMessage("{}"), nil
	}
	return b, nil
}

// returnLine encodes a success reply. Members are in QEMU's order.
func returnLine(ret json.RawMessage, id json.RawMessage) []byte {
	return encodeLine(struct {
		Return json.RawMessage `json:"return"`
		ID     json.RawMessage `json:"id,omitempty"`
	}{ret, id})
}

// errorLine encodes an error reply. Members are in QEMU's order.
func errorLine(qerr *Error, id json.RawMessage) []byte {
	return encodeLine(struct {
		ID    json.RawMessage `json:"id,omitempty"`
		Error *Error          `json:"error"`
	}{id, qerr})
}

// marshal is json.Marshal without escaping <, > and &, which QEMU does not
// escape either: QMP output is not embedded in HTML.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// encodeLine encodes v as one line of QMP output, formatted as QEMU formats
// it: a space after each colon and comma, non-ASCII characters escaped as
// \uXXXX (QMP output is ASCII), and CRLF at the end. Only values this package
// builds from valid JSON are passed, so it cannot fail.
func encodeLine(v any) []byte {
	b, err := marshal(v)
	if err != nil {
		panic(fmt.Sprintf("qmpserver: encode %T: %v", v, err))
	}
	return append(qemuStyle(b), '\r', '\n')
}

// qemuStyle reformats compact JSON text as QEMU writes it.
func qemuStyle(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/8)
	inString, escaped, hexLeft := false, false, 0
	for len(b) > 0 {
		c := b[0]
		switch {
		case c >= utf8.RuneSelf: // only inside strings
			r, size := utf8.DecodeRune(b)
			b = b[size:]
			if r > 0xFFFF {
				r1, r2 := utf16.EncodeRune(r)
				out = fmt.Appendf(out, `\u%04X\u%04X`, r1, r2)
			} else {
				out = fmt.Appendf(out, `\u%04X`, r)
			}
			continue
		case hexLeft > 0: // the digits of a \uXXXX escape
			hexLeft--
			if 'a' <= c && c <= 'f' {
				c -= 'a' - 'A'
			}
		case escaped:
			escaped = false
			if c == 'u' {
				hexLeft = 4
			}
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ':' || c == ',':
			out = append(out, c, ' ')
			b = b[1:]
			continue
		}
		out = append(out, c)
		b = b[1:]
	}
	return out
}

package qmpserver

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Args decodes a command's arguments into a T, usually a struct with json tags,
// strictly as QEMU checks them: a member T has no field for is refused
// ("Parameter 'x' is unexpected"), and so is a value of the wrong type
// ("Invalid parameter type for 'x', expected: string"); both come back as a
// GenericError *Error that a Handler can return as it is. Absent arguments
// decode as {}.
//
// Args cannot tell a member that was left out from one set to its zero value; a
// command with required arguments checks them itself (QEMU's words are
// "Parameter 'x' is missing"). A json.Unmarshaler inside T that returns an *Error
// has it passed through unchanged.
func Args[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		raw = json.RawMessage("{}")
	}
	if err := exactMembers(raw, reflect.TypeOf(v)); err != nil {
		return v, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, argsError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return v, GenericError("QMP input member 'arguments' must be an object")
	}
	return v, nil
}

// NoArgs is h for a command that takes no arguments: one given any is
// refused as QEMU refuses it ("Parameter 'x' is unexpected"), not ignored.
func NoArgs(h Handler) Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		if _, err := Args[struct{}](raw); err != nil {
			return nil, err
		}
		return h(ctx, raw)
	}
}

// exactMembers refuses, where t is a struct, a member of the object raw
// that no field of t names exactly, or one given twice, as QEMU does:
// encoding/json matches names regardless of case, so {"device":"a",
// "DEVICE":"b"} was taken as device b (found by a review walk). Anything
// that is not an object is left to the decoder to refuse.
func exactMembers(raw json.RawMessage, t reflect.Type) *Error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	names := fieldNames(t, map[string]bool{})
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		if !names[name] {
			return GenericError("Parameter '%s' is unexpected", name)
		}
		if seen[name] {
			return GenericError("Parameter '%s' is given twice", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
		if bytes.Equal(skip, []byte("null")) {
			// QEMU refuses it; decoded, it left the member unset and the
			// command said it succeeded (found by a review walk's fuzzing).
			return GenericError("Invalid parameter type for '%s', expected: a value, not null", name)
		}
	}
	return nil
}

// fieldNames adds the JSON member names of struct t's fields to names,
// those of embedded structs without a name of their own included.
func fieldNames(t reflect.Type, names map[string]bool) map[string]bool {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				fieldNames(ft, names)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		names[cmp.Or(name, f.Name)] = true
	}
	return names
}

// argsError turns an encoding/json error into the error QEMU would give.
func argsError(err error) *Error {
	var qerr *Error
	if errors.As(err, &qerr) {
		return qerr
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return GenericError("QMP input member 'arguments' must be an object")
		}
		if strings.HasPrefix(typeErr.Value, "number") && typeErr.Type != nil {
			// A number out of the field's range, or not whole: QEMU's
			// words, not "expected: integer" of -5 (walk 128).
			switch typeErr.Type.Kind() {
			case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				return GenericError("Parameter '%s' expects uint%d", typeErr.Field, typeErr.Type.Bits())
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				return GenericError("Parameter '%s' expects int%d", typeErr.Field, typeErr.Type.Bits())
			}
		}
		return GenericError("Invalid parameter type for '%s', expected: %s", typeErr.Field, qapiType(typeErr.Type))
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return GenericError("JSON parse error, %v", syntaxErr)
	}
	// encoding/json reports unknown members only as text: json: unknown field "x".
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if unquoted, uerr := strconv.Unquote(name); uerr == nil {
			name = unquoted
		}
		return GenericError("Parameter '%s' is unexpected", name)
	}
	return GenericError("Invalid arguments: %v", err)
}

// qapiType names a Go type the way QEMU's schema does in its error messages.
func qapiType(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	default:
		return t.String()
	}
}

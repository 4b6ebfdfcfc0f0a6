package qmpserver

import (
	"encoding/json"
	"errors"
	"testing"
)

type migrateArgs struct {
	URI    string `json:"uri"`
	Detach bool   `json:"detach"`
	Limits struct {
		Bandwidth uint64 `json:"bandwidth"`
	} `json:"limits"`
	Mode mode `json:"mode"`
}

// mode is an enum whose decoding reports errors as QEMU does.
type mode string

func (m *mode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s != "precopy" && s != "tsmc" {
		return GenericError("Parameter 'mode' does not accept value '%s'", s)
	}
	*m = mode(s)
	return nil
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    migrateArgs
		wantErr string
	}{
		{"absent", "", migrateArgs{}, ""},
		{"null", "null", migrateArgs{}, ""},
		{"empty", "{}", migrateArgs{}, ""},
		{"all", `{"uri":"tcp:h:1","detach":true,"limits":{"bandwidth":5},"mode":"tsmc"}`,
			migrateArgs{URI: "tcp:h:1", Detach: true, Limits: struct {
				Bandwidth uint64 `json:"bandwidth"`
			}{5}, Mode: "tsmc"}, ""},
		{"unexpected", `{"uri":"x","blk":true}`, migrateArgs{}, "Parameter 'blk' is unexpected"},
		{"unexpected nested", `{"limits":{"latency":1}}`, migrateArgs{}, "Parameter 'latency' is unexpected"},
		{"wrong type", `{"uri":1}`, migrateArgs{}, "Invalid parameter type for 'uri', expected: string"},
		{"wrong type bool", `{"detach":"yes"}`, migrateArgs{}, "Invalid parameter type for 'detach', expected: boolean"},
		{"wrong type nested", `{"limits":{"bandwidth":"x"}}`, migrateArgs{}, "Invalid parameter type for 'limits.bandwidth', expected: integer"},
		{"negative unsigned", `{"limits":{"bandwidth":-1}}`, migrateArgs{}, "Parameter 'limits.bandwidth' expects uint64"},
		{"not an object", `[1]`, migrateArgs{}, "QMP input member 'arguments' must be an object"},
		{"trailing data", `{} {}`, migrateArgs{}, "QMP input member 'arguments' must be an object"},
		{"enum error passed through", `{"mode":"fast"}`, migrateArgs{}, "Parameter 'mode' does not accept value 'fast'"},
		// Names are matched exactly, as QEMU matches them (encoding/json
		// took "URI" for uri, and the last of a name given twice).
		{"case differs", `{"URI":"tcp:h:1"}`, migrateArgs{}, "Parameter 'URI' is unexpected"},
		{"twice in two cases", `{"uri":"a","Uri":"b"}`, migrateArgs{}, "Parameter 'Uri' is unexpected"},
		{"twice", `{"uri":"a","uri":"b"}`, migrateArgs{}, "Parameter 'uri' is given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Args[migrateArgs](json.RawMessage(tt.raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			var qerr *Error
			if !errors.As(err, &qerr) {
				t.Fatalf("err = %v (%T), want an *Error", err, err)
			}
			if qerr.Class != ClassGenericError || qerr.Desc != tt.wantErr {
				t.Errorf("got %s %q, want GenericError %q", qerr.Class, qerr.Desc, tt.wantErr)
			}
		})
	}
}

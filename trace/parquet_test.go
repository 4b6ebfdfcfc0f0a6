package trace

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// TestExportParquet exports a trace and reads it back with parquet-go: the
// rows, the INT64 column types and the metadata.
func TestExportParquet(t *testing.T) {
	m := testMeta()
	epochs := sampleEpochs(300)
	data, _ := encode(t, m, epochs)
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := ExportParquet(&out, r)
	if err != nil {
		t.Fatal(err)
	}
	epochs = append(epochs, Epoch{Index: epochs[len(epochs)-1].Index + 1}) // idle: a row with a null page
	data, _ = encode(t, m, epochs)
	if r, err = NewReader(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if n, err = ExportParquet(&out, r); err != nil {
		t.Fatal(err)
	}
	var want []ParquetRow
	idle := 0
	for _, e := range epochs {
		if len(e.Pages) == 0 {
			want = append(want, ParquetRow{Epoch: int64(e.Index)})
			idle++
		}
		for _, p := range e.Pages {
			want = append(want, ParquetRow{Epoch: int64(e.Index), Page: new(int64(p))})
		}
	}
	if idle == 0 {
		t.Fatal("no idle epoch in the test's trace")
	}
	if n != int64(len(want)) {
		t.Fatalf("ExportParquet wrote %d rows, want %d", n, len(want))
	}

	f, err := parquet.OpenFile(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if f.NumRows() != int64(len(want)) {
		t.Fatalf("file has %d rows, want %d", f.NumRows(), len(want))
	}
	types := map[string]format.Type{}
	for _, el := range f.Metadata().Schema[1:] {
		if typ, ok := el.Type.Get(); ok {
			types[el.Name] = typ
		}
	}
	if len(types) != 2 || types["epoch"] != format.Int64 || types["page"] != format.Int64 {
		t.Fatalf("columns %v, want epoch and page, INT64", types)
	}
	for key, v := range map[string]string{
		ParquetKeyMemory:             strconv.FormatUint(m.MemoryBytes, 10),
		ParquetKeyPageSize:           "4096",
		ParquetKeyEpoch:              "1000000000",
		ParquetKeyHook:               m.Hook,
		ParquetKeySource:             m.Source,
		ParquetKeyStart:              strconv.FormatInt(m.Start.UnixNano(), 10),
		ParquetKeyExtra + "workload": m.Extra["workload"],
	} {
		if got, ok := f.Lookup(key); !ok || got != v {
			t.Errorf("metadata %s = %q, %v; want %q", key, got, ok, v)
		}
	}

	rows, err := parquet.Read[ParquetRow](bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) {
		t.Fatalf("read %d rows, want %d", len(rows), len(want))
	}
	for i := range rows {
		if !sameRow(rows[i], want[i]) {
			t.Fatalf("row %d = %s, want %s", i, rowString(rows[i]), rowString(want[i]))
		}
	}
}

func sameRow(a, b ParquetRow) bool {
	return a.Epoch == b.Epoch && (a.Page == nil) == (b.Page == nil) && (a.Page == nil || *a.Page == *b.Page)
}

func rowString(r ParquetRow) string {
	if r.Page == nil {
		return fmt.Sprintf("{epoch %d, page null}", r.Epoch)
	}
	return fmt.Sprintf("{epoch %d, page %d}", r.Epoch, *r.Page)
}

// TestExportParquetNotUTF8: a header's bytes that are not UTF-8 go into
// the file's key/value metadata replaced, the rest kept, so that every
// string in it is UTF-8 as Parquet's format says.
func TestExportParquetNotUTF8(t *testing.T) {
	m := testMeta()
	m.Source = "vm \xff\xfe pid 7"
	m.Extra = map[string]string{"k\xc0": "v\x80w"}
	out := exportParquet(t, m, sampleEpochs(3))
	f, err := parquet.OpenFile(bytes.NewReader(out), int64(len(out)))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range f.Metadata().KeyValueMetadata {
		if !utf8.ValidString(kv.Key) || !utf8.ValidString(kv.Value) {
			t.Errorf("metadata %q = %q: not UTF-8", kv.Key, kv.Value)
		}
	}
	for key, v := range map[string]string{ParquetKeySource: "vm \uFFFD pid 7", ParquetKeyExtra + "k\uFFFD": "v\uFFFDw"} {
		if got, ok := f.Lookup(key); !ok || got != v {
			t.Errorf("metadata %s = %q, %v; want %q", key, got, ok, v)
		}
	}
}

// TestExportParquetEmpty: a trace of idle epochs gives a valid file with a
// row for each, its page null (walk 148: idle epochs left no row, as
// though lost), and a trace without epochs an empty one.
func TestExportParquetEmpty(t *testing.T) {
	out := exportParquet(t, testMeta(), []Epoch{{Index: 0}, {Index: 1}})
	rows, err := parquet.Read[ParquetRow](bytes.NewReader(out), int64(len(out)))
	if err != nil || len(rows) != 2 || rows[0].Epoch != 0 || rows[0].Page != nil || rows[1].Epoch != 1 || rows[1].Page != nil {
		t.Fatalf("%d rows %v, err %v; want epochs 0 and 1, pages null", len(rows), rows, err)
	}
	out = exportParquet(t, testMeta(), nil)
	if rows, err := parquet.Read[ParquetRow](bytes.NewReader(out), int64(len(out))); err != nil || len(rows) != 0 {
		t.Fatalf("no epochs: %d rows, err %v", len(rows), err)
	}
}

// exportParquet returns a trace of m and epochs exported as Parquet.
func exportParquet(t *testing.T, m Meta, epochs []Epoch) []byte {
	t.Helper()
	data, _ := encode(t, m, epochs)
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := ExportParquet(&out, r); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

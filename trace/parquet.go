package trace

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/pagecast/pagecast/internal/buildinfo"
	"github.com/parquet-go/parquet-go"
)

// ParquetRow is one row of a Parquet export: a page dirtied in an epoch,
// or, with Page null, an epoch in which none was (as the CSV's "N,"): an
// idle epoch is data, where an index the trace lacks was lost (walk 148:
// 998 idle epochs of 1 000 vanished from the export without a word).
type ParquetRow struct {
	Epoch int64  `parquet:"epoch"`
	Page  *int64 `parquet:"page,optional"`
}

// Parquet key/value metadata keys under which ExportParquet stores the
// trace's Meta.
const (
	ParquetKeyMemory   = "pagecast.memory_bytes"
	ParquetKeyPageSize = "pagecast.page_size"
	ParquetKeyEpoch    = "pagecast.epoch_ns"
	ParquetKeyHook     = "pagecast.hook"
	ParquetKeySource   = "pagecast.source"
	ParquetKeyStart    = "pagecast.start_unix_ns"
	// ParquetKeyExtra prefixes the keys of Meta.Extra.
	ParquetKeyExtra = "pagecast.extra."
)

// ExportParquet writes the rest of r's epochs to w as a Parquet file with
// two INT64 columns, epoch and page: one row per page, as ExportCSV, and
// one with a null page for an epoch that dirtied none. The
// file is zstd-compressed and carries r's Meta as key/value metadata. It
// returns the number of rows written.
func ExportParquet(w io.Writer, r *Reader) (int64, error) {
	m := r.Meta()
	opts := []parquet.WriterOption{
		// Version 1 data pages and zstd: what pyarrow and DuckDB write
		// themselves, so every reader of theirs opens the file.
		parquet.DataPageVersion(1),
		parquet.Compression(&parquet.Zstd),
		// "pagecast version devel (build 905b876e1f2a)": the
		// library puts no space before "(build".
		parquet.CreatedBy("pagecast", buildinfo.Release()+" ", cmp.Or(buildinfo.Revision(), "unknown")),
		parquet.KeyValueMetadata(ParquetKeyMemory, strconv.FormatUint(m.MemoryBytes, 10)),
		parquet.KeyValueMetadata(ParquetKeyPageSize, strconv.FormatUint(uint64(m.PageSize), 10)),
		parquet.KeyValueMetadata(ParquetKeyEpoch, strconv.FormatInt(int64(m.Epoch), 10)),
	}
	if m.Hook != "" {
		opts = append(opts, parquet.KeyValueMetadata(ParquetKeyHook, utf8Text(m.Hook)))
	}
	if m.Source != "" {
		opts = append(opts, parquet.KeyValueMetadata(ParquetKeySource, utf8Text(m.Source)))
	}
	if !m.Start.IsZero() {
		opts = append(opts, parquet.KeyValueMetadata(ParquetKeyStart, strconv.FormatInt(m.Start.UnixNano(), 10)))
	}
	for _, k := range slices.Sorted(maps.Keys(m.Extra)) {
		opts = append(opts, parquet.KeyValueMetadata(utf8Text(ParquetKeyExtra+k), utf8Text(m.Extra[k])))
	}
	pw := parquet.NewGenericWriter[ParquetRow](w, opts...)
	batch := make([]ParquetRow, 0, 8192)
	var rows int64
	write := func() error {
		if _, err := pw.Write(batch); err != nil {
			return fmt.Errorf("write parquet: %w", err)
		}
		rows += int64(len(batch))
		batch = batch[:0]
		return nil
	}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rows, err
		}
		if e.Index > math.MaxInt64 {
			return rows, fmt.Errorf("epoch %d does not fit a parquet INT64", e.Index)
		}
		if len(e.Pages) == 0 {
			batch = append(batch, ParquetRow{Epoch: int64(e.Index)})
		}
		for _, p := range e.Pages {
			if p > math.MaxInt64 {
				return rows, fmt.Errorf("page %d does not fit a parquet INT64", p)
			}
			batch = append(batch, ParquetRow{Epoch: int64(e.Index), Page: new(int64(p))})
			if len(batch) == cap(batch) {
				if err := write(); err != nil {
					return rows, err
				}
			}
		}
		if len(batch) >= cap(batch) {
			if err := write(); err != nil {
				return rows, err
			}
		}
	}
	if err := write(); err != nil {
		return rows, err
	}
	if err := pw.Close(); err != nil {
		return rows, fmt.Errorf("write parquet: %w", err)
	}
	return rows, nil
}

// utf8Text is s with each run of bytes that are not UTF-8 replaced by
// U+FFFD: Parquet's key/value metadata are UTF-8 strings, and a trace's
// header may hold other bytes (walk 122 wrote them; readers that check,
// as pyarrow does, would refuse the file).
func utf8Text(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

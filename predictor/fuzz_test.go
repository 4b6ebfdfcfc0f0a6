package predictor

import (
	"slices"
	"testing"
)

// FuzzModel feeds a model of any page count any epochs: it must not
// panic, its probabilities lie in [0, 1], and its shortcuts over quiet
// pages change none of them (TestOddPageCounts is what it would have
// found: a count of 512k+1 to 512k+7 pages).
func FuzzModel(f *testing.F) {
	f.Add(uint16(4097), []byte{0, 1, 0xff, 2, 3, 0xff, 0xff, 0x10, 0x00})
	f.Add(uint16(1), []byte{0, 0xff, 0})
	f.Add(uint16(515), []byte{1, 2, 3, 4, 5, 6, 7, 8, 0xff, 9, 10})
	f.Fuzz(func(t *testing.T, n uint16, data []byte) {
		pages := uint64(n%8200) + 1
		if len(data) > 4096 {
			data = data[:4096]
		}
		// Each 0xff closes an epoch; other bytes, in pairs, are pages.
		var epochs [][]uint64
		var cur []uint64
		for i := 0; i < len(data); i++ {
			if data[i] == 0xff || i+1 == len(data) {
				slices.Sort(cur)
				epochs = append(epochs, slices.Compact(cur))
				cur = nil
				continue
			}
			cur = append(cur, (uint64(data[i])<<8|uint64(data[i+1]))*31%pages)
			i++
		}
		shortcutsAlike(t, pages, epochs, 1, 4)
	})
}

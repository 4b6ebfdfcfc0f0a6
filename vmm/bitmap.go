package vmm

import "github.com/pagecast/pagecast/bitmap"

// Bitmap is a set of guest page frame numbers (package bitmap).
type Bitmap = bitmap.Bitmap

// NewBitmap returns an empty set able to hold pages [0, pages).
func NewBitmap(pages uint64) *Bitmap { return bitmap.New(pages) }

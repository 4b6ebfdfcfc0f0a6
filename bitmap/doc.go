// Package bitmap is a set of guest page frame numbers, one bit per page:
// the dirty logs of every guest, the migration engine's pending and
// deferred sets, and TSMC's dirty bitmap on the wire.
package bitmap

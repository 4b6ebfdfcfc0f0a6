package tcgtest

import (
	"encoding/binary"

	"github.com/pagecast/pagecast/tcg"
)

// Area is an area of capacity pages as a running plugin in process pid
// leaves it: the header (plugin API version 1 at both QEMU's bounds),
// both buffers empty.
func Area(capacity uint64, pid int) []byte {
	f := make([]byte, tcg.HeaderSize+2*capacity)
	le := binary.LittleEndian
	le.PutUint32(f[0:], tcg.Magic)
	le.PutUint32(f[4:], tcg.LayoutVersion)
	le.PutUint32(f[8:], 1)  // QEMU's oldest plugin API version
	le.PutUint32(f[12:], 1) // and its latest
	le.PutUint64(f[16:], capacity)
	le.PutUint32(f[28:], 1) // running
	le.PutUint32(f[32:], uint32(pid))
	le.PutUint32(f[40:], 1) // the plugin's API version
	return f
}

package guest

import _ "embed"

//go:embed pagecast-guest.elf
var image []byte

// Image returns the embedded guest image, a multiboot ELF32 built by the
// Makefile in this directory. The slice is shared: do not modify it.
func Image() []byte { return image }

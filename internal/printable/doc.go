// Package printable makes text from elsewhere (a peer's error, a QEMU's
// reply) safe to print on a terminal: control characters are escaped, so
// that a hostile peer can neither clear the screen nor forge lines.
package printable

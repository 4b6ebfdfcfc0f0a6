// Package buildinfo says which pagecast a binary is: the module's version
// where it was built from a release, else the commit it was built from
// (and whether the tree had changes), as Go records it in the binary.
// pagecast --version prints it, and files pagecast writes for others to
// read (Parquet exports) carry it, so that a figure can be traced to the
// code that made it.
package buildinfo

package tcg

// Layout of the shared area; mirrored by dirty.c. See the package comment.
const (
	Magic         = 0x47544350 // 'PCTG'
	LayoutVersion = 1
	HeaderSize    = 4096
	PageShift     = 12 // the plugin's page: 4 KiB guest-physical frames

	offMagic     = 0
	offVersion   = 4
	offAPIMin    = 8
	offAPICur    = 12
	offCapacity  = 16
	offEpoch     = 24
	offState     = 28
	offPID       = 32
	offSlots     = 36
	offPluginAPI = 40

	slotOffset = 256
	slotSize   = 64
	slotCount  = (HeaderSize - slotOffset) / slotSize // 60
	slotWrites = 0
	slotOOR    = 8
	slotIO     = 16

	// MaxPages is the plugin's own bound on pages= (MAX_PAGES in
	// dirty.c): 48 bits of guest-physical addresses.
	MaxPages = 1 << (48 - PageShift)

	// DefaultPages is the plugin's capacity without pages=: 4 GiB of
	// physical addresses.
	DefaultPages = 1 << (32 - PageShift)
)

// Plugin states in the header.
const (
	stateInit    = 0
	stateRunning = 1
	stateExited  = 2
)

// The QEMU plugin API versions the plugin declares: the oldest where the
// QEMU loading it still has version 1's deprecated functions (QEMU 7.2 to
// 8.2), the newest where they are gone (QEMU 9.0 and later, which load
// version 2 and up only). It calls the same functions in either.
const (
	PluginAPIOldest = 1
	PluginAPINewest = 2
)

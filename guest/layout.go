package guest

// The guest's memory layout and boot protocol; see the package comment.
const (
	PageSize        = 4096
	MinMemory       = 8 << 20  // smallest guest memory the guest accepts
	ImageAddr       = 0x100000 // where the image is linked (1 MiB)
	ReplayTableAddr = 0x200000 // the replay table: little-endian u32 guest page numbers
	ReplayTableMax  = 524288   // entries that fit before the arena
	ArenaStart      = 0x400000 // first byte that workloads write
	MaxCPUs         = 16       // vCPUs the guest has stacks and status slots for

	BootMagic = 0x2BADB002 // EAX of the boot CPU, as multiboot specifies
	APMagic   = 0x50434150 // EAX of additional vCPUs ('PCAP'); ESI holds the CPU index

	multibootMagic = 0x1BADB002 // the image's multiboot header
)

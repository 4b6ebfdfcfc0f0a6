package tcg

// RemoveStaleIn is RemoveStale in another directory than /dev/shm.
var RemoveStaleIn = removeStaleIn

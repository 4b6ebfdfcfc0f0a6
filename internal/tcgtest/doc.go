// Package tcgtest lays out areas of pagecast's TCG plugin as the plugin
// does (package tcg, dirty.c), for tests that play the plugin's part.
package tcgtest

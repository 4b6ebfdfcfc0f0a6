// Command gen writes pagecast's Grafana dashboards as JSON into a folder
// (default: dashboards/, run from the repository's root; `make dashboards`).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pagecast/pagecast/dashboards"
)

func main() {
	out := flag.String("out", "dashboards", "folder to write the JSON files into")
	flag.Parse()
	files, err := dashboards.Generate()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(*out, f.Name), f.JSON, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "gen: %v\n", err)
			os.Exit(1)
		}
	}
}

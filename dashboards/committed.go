package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
)

//go:embed *.json
var committed embed.FS

// Dashboard is what pagecast reads back from a committed dashboard: its
// variables and panels with their queries.
type Dashboard struct {
	File        string     `json:"-"`
	UID         string     `json:"uid"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Templating  Templating `json:"templating"`
	Panels      []Panel    `json:"panels"`
}

// Templating holds a dashboard's variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable: "datasource" (Query is the plugin) or
// "query" (Query is label_values(SELECTOR, LABEL)).
type Variable struct {
	Type       string `json:"type"`
	Name       string `json:"name"`
	Query      any    `json:"query"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

// Panel is one panel; rows are panels of type "row" without targets.
type Panel struct {
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *DataSourceRef `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []Target `json:"targets"`
	Options struct {
		TextMode string `json:"textMode"` // a stat's: "name" shows each series' name alone
	} `json:"options"`
}

// Unit is the panel's unit (Grafana's unit id).
func (p Panel) Unit() string { return p.FieldConfig.Defaults.Unit }

// Target is one query of a panel.
type Target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *DataSourceRef `json:"datasource"`
	Instant      bool           `json:"instant"` // one value per series, at the range's end
}

// DataSourceRef names a data source.
type DataSourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Committed reads the committed dashboards, in file name order.
func Committed() ([]Dashboard, error) {
	names, err := fs.Glob(committed, "*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Dashboard
	for _, name := range names {
		b, err := committed.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", name, err)
		}
		d.File = name
		out = append(out, d)
	}
	return out, nil
}

// CommittedJSON returns the committed file name's bytes.
func CommittedJSON(name string) ([]byte, error) { return committed.ReadFile(name) }

// Rules is rules.yml: Prometheus recording and alerting rules on
// pagecast's metrics.
//
//go:embed rules.yml
var Rules []byte

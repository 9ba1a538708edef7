// Command chartdoc writes the values table of a Helm chart's README from the
// comments of its values.yaml, and fails when a value has no comment, so that
// values.yaml stays the chart's complete documentation.
//
// The comment right above a key documents it. A mapping whose keys carry
// comments of their own is a section: its keys get rows. Any other value
// (a scalar, a list, or a mapping whose keys have no comments, such as
// resources) is one row, shown with its default as JSON. The table replaces
// the text between the markers
//
//	<!-- values:start --> and <!-- values:end -->
//
// of the README.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	startMarker = "<!-- values:start -->"
	endMarker   = "<!-- values:end -->"
)

func main() {
	valuesPath := flag.String("values", "values.yaml", "The chart's values.yaml.")
	readmePath := flag.String("readme", "README.md", "The README to update.")
	check := flag.Bool("check", false, "Do not write: fail if the README is not up to date.")
	flag.Parse()
	if err := run(*valuesPath, *readmePath, *check); err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
}

func run(valuesPath, readmePath string, check bool) error {
	values, err := os.ReadFile(valuesPath) //nolint:gosec // paths are the make target's own arguments.
	if err != nil {
		return err
	}
	readme, err := os.ReadFile(readmePath) //nolint:gosec // see above.
	if err != nil {
		return err
	}
	rows, err := parseValues(values)
	if err != nil {
		return fmt.Errorf("%s: %w", valuesPath, err)
	}
	updated, err := replaceTable(readme, renderTable(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", readmePath, err)
	}
	if bytes.Equal(updated, readme) {
		return nil
	}
	if check {
		return fmt.Errorf("%s is out of date: run `make chart-docs`", readmePath)
	}
	return os.WriteFile(readmePath, updated, 0o644) //nolint:gosec // a README is world-readable.
}

// row documents one value.
type row struct {
	Key, Type, Default, Description string
}

// parseValues returns one row per documented value, in file order.
func parseValues(data []byte) ([]row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the top level must be a mapping")
	}
	var rows []row
	var missing []string
	walk(doc.Content[0], "", &rows, &missing)
	if len(missing) > 0 {
		return nil, fmt.Errorf("values without a comment: %s", strings.Join(missing, ", "))
	}
	return rows, nil
}

func walk(m *yaml.Node, prefix string, rows *[]row, missing *[]string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		desc := commentText(k.HeadComment)
		if isSection(v) {
			walk(v, key+".", rows, missing)
			continue
		}
		if desc == "" {
			*missing = append(*missing, key)
			continue
		}
		*rows = append(*rows, row{Key: key, Type: typeOf(v), Default: defaultOf(v), Description: desc})
	}
}

// isSection reports whether v is a mapping whose keys are documented one by
// one.
func isSection(v *yaml.Node) bool {
	if v.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i < len(v.Content); i += 2 {
		if commentText(v.Content[i].HeadComment) != "" {
			return true
		}
	}
	return false
}

// commentText joins the lines of a comment into one paragraph. A blank
// comment line ends it, so that a section's introduction above the first
// key does not run into that key's own comment.
func commentText(c string) string {
	blocks := strings.Split(strings.TrimSpace(c), "\n\n")
	var words []string
	for _, line := range strings.Split(blocks[len(blocks)-1], "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if line != "" {
			words = append(words, line)
		}
	}
	return strings.Join(words, " ")
}

func typeOf(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		switch v.ShortTag() {
		case "!!bool":
			return "bool"
		case "!!int":
			return "int"
		case "!!float":
			return "float"
		case "!!null":
			return "null"
		}
		return "string"
	}
	return "unknown"
}

func defaultOf(v *yaml.Node) string {
	var x any
	if err := v.Decode(&x); err != nil {
		return "?"
	}
	b, err := json.Marshal(x)
	if err != nil {
		return "?"
	}
	return string(b)
}

func renderTable(rows []row) []byte {
	var b bytes.Buffer
	b.WriteString("| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", r.Key, r.Type, strings.ReplaceAll(r.Default, "|", `\|`), escape(r.Description))
	}
	return b.Bytes()
}

// escape keeps a cell from ending early and placeholders such as <release>
// from being taken for HTML.
func escape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

// replaceTable puts table between the README's markers.
func replaceTable(readme, table []byte) ([]byte, error) {
	start := bytes.Index(readme, []byte(startMarker))
	end := bytes.Index(readme, []byte(endMarker))
	if start < 0 || end < 0 || end < start {
		return nil, fmt.Errorf("want the markers %s and %s, in that order", startMarker, endMarker)
	}
	var out bytes.Buffer
	out.Write(readme[:start+len(startMarker)])
	out.WriteString("\n")
	out.Write(table)
	out.Write(readme[end:])
	return out.Bytes(), nil
}

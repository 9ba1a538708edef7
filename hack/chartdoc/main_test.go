package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseValues(t *testing.T) {
	tests := []struct {
		name    string
		values  string
		want    []row
		wantErr string
	}{
		{
			name: "A documented scalar becomes one row with its JSON default.",
			values: `# The header of the file.

# How many replicas.
replicas: 2
`,
			want: []row{{Key: "replicas", Type: "int", Default: "2", Description: "How many replicas."}},
		},
		{
			name: "A mapping whose keys have comments is a section, and its keys get dotted rows.",
			values: `# The image.
image:
  # Repository of the image,
  # on two lines.
  repository: example.com/x
  # Use it.
  enabled: true
`,
			want: []row{
				{Key: "image.repository", Type: "string", Default: `"example.com/x"`, Description: "Repository of the image, on two lines."},
				{Key: "image.enabled", Type: "bool", Default: "true", Description: "Use it."},
			},
		},
		{
			name: "A mapping whose keys have no comments is one row holding the whole object.",
			values: `# Resources of the pod.
resources:
  limits:
    memory: 1Mi
`,
			want: []row{{Key: "resources", Type: "object", Default: `{"limits":{"memory":"1Mi"}}`, Description: "Resources of the pod."}},
		},
		{
			name: "Lists and empty mappings are rows too.",
			values: `# Extra arguments.
extraArgs: []
# Extra labels.
labels: {}
`,
			want: []row{
				{Key: "extraArgs", Type: "list", Default: "[]", Description: "Extra arguments."},
				{Key: "labels", Type: "object", Default: "{}", Description: "Extra labels."},
			},
		},
		{
			name: "An undocumented value is an error that names it.",
			values: `# A section.
webhook:
  # Documented.
  enabled: true
  port: 9443
`,
			wantErr: "webhook.port",
		},
		{
			name:    "A document that is not a mapping is an error.",
			values:  "- a\n- b\n",
			wantErr: "mapping",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseValues([]byte(tt.values))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error mentioning %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got rows %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("row %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestRunWritesAndChecksTheTable(t *testing.T) {
	dir := t.TempDir()
	values := filepath.Join(dir, "values.yaml")
	readme := filepath.Join(dir, "README.md")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(values, "# Pipes | and <placeholders> are escaped.\na: \"x|y\"\n")
	write(readme, "# Chart\n\n<!-- values:start -->\nstale\n<!-- values:end -->\n\nAfter.\n")

	if err := run(values, readme, true); err == nil || !strings.Contains(err.Error(), "out of date") {
		t.Fatalf("check mode on a stale README: want an out-of-date error, got %v", err)
	}
	if err := run(values, readme, false); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Chart\n\n<!-- values:start -->\n| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n" +
		"| `a` | string | `\"x\\|y\"` | Pipes \\| and &lt;placeholders&gt; are escaped. |\n<!-- values:end -->\n\nAfter.\n"
	if string(got) != want {
		t.Fatalf("README:\n%s\nwant:\n%s", got, want)
	}
	if err := run(values, readme, true); err != nil {
		t.Fatalf("check mode right after writing: %v", err)
	}

	write(readme, "no markers\n")
	if err := run(values, readme, false); err == nil || !strings.Contains(err.Error(), "markers") {
		t.Fatalf("README without markers: want a markers error, got %v", err)
	}
}

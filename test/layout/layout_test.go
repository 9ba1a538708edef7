// Package layout guards the import arrows of the tree (docs: README's
// layout table, /work/shared/design.md "two wings over a foundation"):
// internal/ is the foundation both deployables share and never imports a
// wing, the harness or the tooling; the sidecar binary links nothing of the
// operator, the test harness or the tooling; the operator binary links no
// test harness or tooling.
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "gatehouse.dev/gatehouse"

// goPackage is the part of `go list -json` these tests read.
type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// goList runs `go list -json` with args from the module's root.
func goList(t *testing.T, args ...string) []goPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...) //nolint:gosec // fixed tool, test-chosen args
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// within reports whether the import path pkg is the module folder dir or
// below it.
func within(pkg, dir string) bool {
	p := module + "/" + dir
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// offending returns the imports that lie in one of the forbidden folders.
func offending(imports []string, forbidden []string) []string {
	var bad []string
	for _, imp := range imports {
		for _, dir := range forbidden {
			if within(imp, dir) {
				bad = append(bad, imp)
				break
			}
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

// wingsAndSheds are the folders internal/ must never import.
var wingsAndSheds = []string{"controllers", "operator", "sidecar", "test", "hack", "cmd"}

func TestInternalImportsNoWingHarnessOrTooling(t *testing.T) {
	// -test adds the packages' test variants, so that a test file of
	// internal/ cannot import a wing either.
	pkgs := goList(t, "-test", "./internal/...")
	if len(pkgs) == 0 {
		t.Fatal("go list found no package under internal/")
	}
	for _, p := range pkgs {
		if bad := offending(p.Imports, wingsAndSheds); len(bad) > 0 {
			t.Errorf("%s imports %s; internal/ holds only what both deployables share and never imports a wing, the harness or the tooling", p.ImportPath, strings.Join(bad, ", "))
		}
	}
}

func TestBinariesLinkOnlyTheirOwnWing(t *testing.T) {
	tests := []struct {
		name      string
		main      string
		forbidden []string
	}{
		{
			name: "The sidecar binary links nothing of the operator, the reconcilers, the test harness (with its control plane) or the tooling.",
			main: "./cmd/gatehouse-sidecar",
			forbidden: []string{
				"operator", "controllers", "test", "hack", "cmd/gatehouse",
			},
		},
		{
			name:      "The operator binary links neither the test harness nor the tooling.",
			main:      "./cmd/gatehouse",
			forbidden: []string{"test", "hack"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pkgs := goList(t, "-deps", tc.main)
			var deps []string
			for _, p := range pkgs {
				deps = append(deps, p.ImportPath)
			}
			if !slices.Contains(deps, module+strings.TrimPrefix(tc.main, ".")) {
				t.Fatalf("go list -deps %s does not list the command itself; the test reads the wrong output", tc.main)
			}
			if bad := offending(deps, tc.forbidden); len(bad) > 0 {
				t.Errorf("%s links %s", tc.main, strings.Join(bad, ", "))
			}
			if tc.main == "./cmd/gatehouse-sidecar" {
				if bad := testControlPlane(deps); len(bad) > 0 {
					t.Errorf("%s links the test control plane: %s", tc.main, strings.Join(bad, ", "))
				}
			}
		})
	}
}

// testControlPlane returns the dependencies that start a test API server
// (controller-runtime's envtest, or the project's own control plane).
func testControlPlane(deps []string) []string {
	var bad []string
	for _, d := range deps {
		if strings.HasPrefix(d, "sigs.k8s.io/controller-runtime/pkg/envtest") || within(d, "test/controlplane") {
			bad = append(bad, d)
		}
	}
	return bad
}

// reflectMethodImporters are packages that call reflect's Method or
// MethodByName with a computed name: once one is linked, the linker keeps
// every exported method of every type that can reach an interface, which
// grew the sidecar's mapped executable by about a third.
var reflectMethodImporters = []string{"html/template", "golang.org/x/net/trace"}

// operatorFramework are controller-runtime's process-level packages (the
// root package, the manager and what it starts): the sidecar needs only
// the logger, cache and client.
var operatorFramework = []string{
	"sigs.k8s.io/controller-runtime",
	"sigs.k8s.io/controller-runtime/pkg/manager",
	"sigs.k8s.io/controller-runtime/pkg/builder",
	"sigs.k8s.io/controller-runtime/pkg/webhook",
}

func TestTheSidecarAsShippedLinksNoMethodKeeperNorTheOperatorFramework(t *testing.T) {
	// The Dockerfile and `make build` build with -tags grpcnotrace
	// (test/image checks the Dockerfile).
	var deps []string
	for _, p := range goList(t, "-deps", "-tags", "grpcnotrace", "./cmd/gatehouse-sidecar") {
		deps = append(deps, p.ImportPath)
	}
	for _, bad := range append(append([]string{}, reflectMethodImporters...), operatorFramework...) {
		if slices.Contains(deps, bad) {
			t.Errorf("./cmd/gatehouse-sidecar (-tags grpcnotrace) links %s; see docs/performance.md for what it costs every pod", bad)
		}
	}
}

func TestOffendingFindsAFolderAndItsSubfolders(t *testing.T) {
	imports := []string{module + "/operator", module + "/operator/app", module + "/operatorish", module + "/internal/owned"}
	got := fmt.Sprint(offending(imports, []string{"operator"}))
	want := fmt.Sprint([]string{module + "/operator", module + "/operator/app"})
	if got != want {
		t.Errorf("offending = %s, want %s", got, want)
	}
}

// TestTheReadmeLayoutTableNamesEveryFolder keeps README.md's layout table
// complete: every top-level folder has a row, and every folder one level
// below has a row of its own or is named (`name`) in its parent's row.
// Two levels, because that is where a package's purpose is decided
// (controllers/apikeys, sidecar/app); deeper folders belong to their
// package's own doc comment.
func TestTheReadmeLayoutTableNamesEveryFolder(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := layoutRows(string(readme))
	if len(rows) == 0 {
		t.Fatal("README.md has no layout table (| `path/` | ... |)")
	}
	out, err := exec.Command("git", "-C", "../..", "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	top, second := map[string]bool{}, map[string]bool{}
	for f := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(f, "/")
		if len(parts) > 1 {
			top[parts[0]] = true
		}
		if len(parts) > 2 {
			second[parts[0]+"/"+parts[1]] = true
		}
	}
	if len(top) == 0 {
		t.Fatal("git ls-files listed no folder; the test reads the wrong tree")
	}
	for dir := range top {
		if !hasRowAtOrBelow(rows, dir) {
			t.Errorf("README.md's layout table has no row for %s/", dir)
		}
	}
	for dir := range second {
		parent, name, _ := strings.Cut(dir, "/")
		if _, ok := rows[dir]; ok {
			continue
		}
		if !strings.Contains(rows[parent], "`"+name+"`") {
			t.Errorf("README.md's layout table names %s/ neither in a row of its own nor as `%s` in the row of %s/", dir, name, parent)
		}
	}
}

// layoutRows maps each path of the README's layout table (the first cell's
// `path/` entries, without the slash) to the row's description.
func layoutRows(readme string) map[string]string {
	rows := map[string]string{}
	path := regexp.MustCompile("`([^`]+)/`")
	for line := range strings.SplitSeq(readme, "\n") {
		first, rest, ok := strings.Cut(strings.TrimPrefix(line, "| "), " | ")
		if !strings.HasPrefix(line, "| `") || !ok {
			continue
		}
		for _, m := range path.FindAllStringSubmatch(first, -1) {
			rows[m[1]] = rest
		}
	}
	return rows
}

// hasRowAtOrBelow reports whether dir or a folder below it has a row
// (api/ is documented by its only package's row, api/v1/).
func hasRowAtOrBelow(rows map[string]string, dir string) bool {
	for p := range rows {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}

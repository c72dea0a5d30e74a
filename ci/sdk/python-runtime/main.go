// The runtime of this repository's builtin "python" SDK: a Go module that the engine loads
// from the `runtime/` folder of the Python SDK image (built by ci/sdk-images) and calls
// through the SDK interface (moduleRuntime, codegen; see core/sdk in the engine's source).
//
// moduleRuntime turns a Python module's source into the container that serves its
// functions: a local Python image, a venv with the module and the dagger-io release that
// matches the engine (installed with uv from the SDK image), and the client regenerated
// from the schema the module sees, so the module's dependencies appear on `dag`.
// codegen writes the starting files of a new module (`dagger init --sdk=python`).
package main

import (
	"context"
	"fmt"
	"path"
	"strings"
	"unicode"

	"dagger/python-sdk/internal/dagger"
)

const (
	srcDir  = "/src"            // the module's context directory, mounted
	sdkDir  = "/opt/dagger-sdk" // uv's requirement files, the client codegen, the schema
	venvDir = "/opt/venv"       // the module and the SDK, installed
	uvCache = "/root/.cache/uv"

	// The module's entry point: the SDK's own (dagger.mod.cli), which finds the main
	// object through the project's `dagger.mod` entry point.
	entrypoint = "import sys; from dagger.mod.cli import app; sys.exit(app())"
)

type PythonSdk struct {
	// The Python SDK image's filesystem: dist/uv, dist/codegen, base-image, the SDK sources.
	// +private
	SDKSourceDir *dagger.Directory
}

func New(
	// The SDK image's filesystem; the engine passes it to every builtin SDK.
	// +optional
	sdkSourceDir *dagger.Directory,
) *PythonSdk {
	return &PythonSdk{SDKSourceDir: sdkSourceDir}
}

// The container that serves the module's functions.
func (m *PythonSdk) ModuleRuntime(
	ctx context.Context,
	modSource *dagger.ModuleSource,
	introspectionJSON *dagger.File,
) (*dagger.Container, error) {
	mod, err := m.inspect(ctx, modSource)
	if err != nil {
		return nil, err
	}
	if !mod.hasPyproject {
		return nil, fmt.Errorf("python module %q: no pyproject.toml in %s (run `dagger develop` to create one)", mod.name, mod.subpath)
	}
	ctr, err := m.base(ctx, mod)
	if err != nil {
		return nil, err
	}
	python := venvDir + "/bin/python"
	install := "uv pip install --python " + python + " --no-sources" +
		" --overrides " + sdkDir + "/overrides.txt -r " + sdkDir + "/requirements.txt"
	projectDir := path.Join(srcDir, mod.subpath)
	return ctr.
		// The dependencies first, from pyproject.toml alone: editing the module's code
		// does not reinstall them. Dynamic dependencies wait for the full install.
		WithFile(path.Join(sdkDir, "project", "pyproject.toml"), mod.context.File(path.Join(mod.subpath, "pyproject.toml"))).
		WithExec([]string{"sh", "-c",
			install + " -r " + sdkDir + "/project/pyproject.toml || " + install}).
		// The client, regenerated from the schema this module sees (core and its dependencies).
		WithMountedFile(path.Join(sdkDir, "schema.json"), introspectionJSON).
		WithExec([]string{"sh", "-c", `set -e
gen=$(` + python + ` -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("dagger").origin).parent / "client" / "gen.py")')
` + python + ` ` + sdkDir + `/codegen.pyz generate -i ` + sdkDir + `/schema.json -o "$gen"
` + python + ` -m compileall -q "$gen"`}).
		// The module itself, built from its source like any Python project.
		WithMountedDirectory(srcDir, mod.context).
		WithWorkdir(projectDir).
		WithExec([]string{"sh", "-c", install + " " + projectDir}).
		WithEnvVariable("DAGGER_MODULE", mod.name).
		WithEnvVariable("DAGGER_MAIN_OBJECT", pascalCase(mod.name)).
		WithEnvVariable("DAGGER_DEFAULT_PYTHON_PACKAGE", snakeCase(mod.name)).
		WithEntrypoint([]string{python, "-c", entrypoint}), nil
}

// The context directory with a new module's starting files when it has no pyproject.toml
// yet; an existing module is returned unchanged (its client is generated at load time).
func (m *PythonSdk) Codegen(
	ctx context.Context,
	modSource *dagger.ModuleSource,
	introspectionJSON *dagger.File,
) (*dagger.GeneratedCode, error) {
	mod, err := m.inspect(ctx, modSource)
	if err != nil {
		return nil, err
	}
	dir := mod.context
	if !mod.hasPyproject {
		version, err := dag.Version(ctx)
		if err != nil {
			return nil, err
		}
		pkg, class := snakeCase(mod.name), pascalCase(mod.name)
		dir = dir.
			WithNewFile(path.Join(mod.subpath, "pyproject.toml"), fmt.Sprintf(pyprojectTemplate, mod.name, strings.TrimPrefix(version, "v"), pkg, class)).
			WithNewFile(path.Join(mod.subpath, "src", pkg, "__init__.py"), fmt.Sprintf(initTemplate, mod.name)).
			WithNewFile(path.Join(mod.subpath, "src", pkg, "main.py"), fmt.Sprintf(mainTemplate, class))
	}
	return dag.GeneratedCode(dir), nil
}

type moduleInfo struct {
	name         string
	subpath      string
	context      *dagger.Directory
	hasPyproject bool
	pyproject    string
}

func (m *PythonSdk) inspect(ctx context.Context, modSource *dagger.ModuleSource) (*moduleInfo, error) {
	name, err := modSource.ModuleOriginalName(ctx)
	if err != nil {
		return nil, err
	}
	subpath, err := modSource.SourceSubpath(ctx)
	if err != nil {
		return nil, err
	}
	mod := &moduleInfo{name: name, subpath: subpath, context: modSource.ContextDirectory()}
	// A new module's source folder may not exist yet: no entries then.
	entries, _ := mod.context.Directory(subpath).Entries(ctx)
	for _, entry := range entries {
		if entry == "pyproject.toml" {
			mod.hasPyproject = true
		}
	}
	if mod.hasPyproject {
		mod.pyproject, err = mod.context.File(path.Join(subpath, "pyproject.toml")).Contents(ctx)
		if err != nil {
			return nil, err
		}
	}
	return mod, nil
}

// The Python image with uv, the codegen, a venv and the SDK's requirement files.
func (m *PythonSdk) base(ctx context.Context, mod *moduleInfo) (*dagger.Container, error) {
	if m.SDKSourceDir == nil {
		return nil, fmt.Errorf("python sdk: no SDK directory (this runtime is meant to be loaded as the engine's builtin python SDK)")
	}
	image := tomlString(mod.pyproject, "tool.dagger", "base-image")
	if image == "" {
		contents, err := m.SDKSourceDir.File("base-image").Contents(ctx)
		if err != nil {
			return nil, fmt.Errorf("python sdk: no default base image in the SDK image: %w", err)
		}
		image = strings.TrimSpace(contents)
	}
	version, err := dag.Version(ctx)
	if err != nil {
		return nil, err
	}
	// The SDK release that matches the engine, whatever the project asks for.
	pin := "dagger-io==" + strings.TrimPrefix(version, "v") + "\n"
	return dag.Container().
		From(image).
		WithEnvVariable("PYTHONUNBUFFERED", "1").
		WithEnvVariable("UV_LINK_MODE", "copy").
		// Byte-compiled at install: every function call starts a new interpreter.
		WithEnvVariable("UV_COMPILE_BYTECODE", "1").
		WithEnvVariable("UV_PYTHON_DOWNLOADS", "never").
		// The platform's trust store: the engine adds its custom CAs there.
		WithEnvVariable("UV_NATIVE_TLS", "1").
		WithFile("/usr/local/bin/uv", m.SDKSourceDir.File("dist/uv")).
		WithFile(path.Join(sdkDir, "codegen.pyz"), m.SDKSourceDir.File("dist/codegen")).
		WithNewFile(path.Join(sdkDir, "requirements.txt"), pin).
		WithNewFile(path.Join(sdkDir, "overrides.txt"), pin).
		WithMountedCache(uvCache, dag.CacheVolume("python-sdk-uv")).
		WithExec([]string{"uv", "venv", "--python", "python3", venvDir}).
		WithEnvVariable("VIRTUAL_ENV", venvDir).
		WithEnvVariable("PATH", venvDir+"/bin:${PATH}", dagger.ContainerWithEnvVariableOpts{Expand: true}), nil
}

// tomlString finds `key = "value"` in a [table] of a TOML document: enough for the one
// setting read here, not a TOML parser.
func tomlString(doc, table, key string) string {
	in := false
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			in = strings.Trim(line, "[] \t") == table
			continue
		}
		if !in {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.Trim(strings.TrimSpace(k), `"`) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		return strings.Trim(v, `"'`)
	}
	return ""
}

// words splits a module name at separators and lower-to-upper case changes.
func words(name string) []string {
	var out []string
	var cur []rune
	prevLower := false
	for _, r := range name {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			if len(cur) > 0 {
				out = append(out, string(cur))
			}
			cur, prevLower = nil, false
			continue
		case unicode.IsUpper(r) && prevLower:
			out = append(out, string(cur))
			cur = nil
		}
		cur = append(cur, r)
		prevLower = unicode.IsLower(r) || unicode.IsDigit(r)
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

// pascalCase: the main object's name the engine expects for a module name ("vllm-ci" -> "VllmCi").
func pascalCase(name string) string {
	var b strings.Builder
	for _, w := range words(name) {
		r := []rune(strings.ToLower(w))
		r[0] = unicode.ToUpper(r[0])
		b.WriteString(string(r))
	}
	return b.String()
}

// snakeCase: the Python package name for a module name ("vllm-ci" -> "vllm_ci").
func snakeCase(name string) string {
	ws := words(name)
	for i, w := range ws {
		ws[i] = strings.ToLower(w)
	}
	return strings.Join(ws, "_")
}

const pyprojectTemplate = `[project]
name = %q
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["dagger-io==%s"]

[project.entry-points."dagger.mod"]
main_object = "%s.main:%s"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
`

const initTemplate = `"""The %s Dagger module; its functions are in main.py."""
`

const mainTemplate = `from dagger import function, object_type


@object_type
class %s:
    @function
    def hello(self, name: str = "world") -> str:
        """A greeting."""
        return f"Hello, {name}!"
`

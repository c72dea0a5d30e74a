// Package distconsts holds the constants that describe where our engine build lives.
// No registry serves this package at any version; the names are the ones the engine and CLI
// reference, the values describe this project's layout (ci/README.md).
package distconsts

const (
	EngineContainerName   = "dagger-engine.dev"
	DefaultEngineSockAddr = "unix:///run/dagger/engine.sock"
	RuncPath              = "/usr/local/bin/runc"
	DaggerInitPath        = "/usr/local/bin/dagger-init"
	EngineDefaultStateDir = "/var/lib/dagger"

	EngineContainerBuiltinContentDir = "/usr/local/share/dagger/content"
	GoSDKManifestDigestEnvName         = "DAGGER_GO_SDK_MANIFEST_DIGEST"
	PythonSDKManifestDigestEnvName     = "DAGGER_PYTHON_SDK_MANIFEST_DIGEST"
	TypescriptSDKManifestDigestEnvName = "DAGGER_TYPESCRIPT_SDK_MANIFEST_DIGEST"

	// Image names only matter for `dagger terminal` and the engine's own tests.
	AlpineVersion = "3.20.2"
	AlpineImage   = "alpine:" + AlpineVersion
	GolangImage   = "golang:1.24-alpine"
	BusyboxImage  = "busybox:1.37.0"

	OCIVersionAnnotation   = "org.opencontainers.image.version"
	EngineCustomCACertsDir = "/usr/local/share/ca-certificates"
)

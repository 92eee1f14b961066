package agentv1

// Name is the short name of an artifact kind, as used in file names and messages:
// "database" or "files".
func (k ArtifactKind) Name() string {
	switch k {
	case ArtifactKind_ARTIFACT_KIND_DATABASE:
		return "database"
	case ArtifactKind_ARTIFACT_KIND_FILES:
		return "files"
	}
	return k.String()
}

# Sourced by the optional CI checks: `unavailable REASON` ends the check that cannot run,
# failing under CI=true and otherwise skipping loudly. The check names itself in $CHECK.
unavailable() {
    if [[ "${CI:-}" == true ]]; then
        echo "error: $1" >&2
        exit 1
    fi
    {
        echo "################################################################################"
        echo "## SKIPPED: $CHECK did not run: $1"
        echo "## (under CI=true this fails)"
        echo "################################################################################"
    } >&2
    exit 0
}

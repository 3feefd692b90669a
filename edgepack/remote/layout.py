"""The deploy root's layout on the device::

releases/<short-id>/           complete, verified releases (never modified once renamed here)
releases/<short-id>.partial/   a release being uploaded; a rerun resumes it
current  -> releases/<id>      switched by renaming a new symlink over it
previous -> releases/<id>      what `edgepack rollback` switches back to
history                        release names in the order they became current
.deploy-lock/                  one deploy at a time per root
"""

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
PARTIAL = ".partial"
LOCK = ".deploy-lock"
HISTORY = "history"

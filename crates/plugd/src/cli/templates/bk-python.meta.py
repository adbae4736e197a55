# The plugin's own description (meta); each version's is its Meta.desc.
description = "{{name}}: greets someone after a poll round (a bk-plugin made by plugd new)"  # pylint: disable=invalid-name

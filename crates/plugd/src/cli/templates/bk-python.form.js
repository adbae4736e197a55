(function () {
    $.atoms["{{name}}"] = [
        {
            "type": "input",
            "attrs": {
                "name": "Name",
                "hookable": true,
                "validation": [{"type": "required"}]
            },
            "tag_code": "name"
        },
        {
            "type": "int",
            "attrs": {
                "name": "Wait (seconds)",
                "hookable": true,
                "default": 1
            },
            "tag_code": "wait"
        }
    ]
})();

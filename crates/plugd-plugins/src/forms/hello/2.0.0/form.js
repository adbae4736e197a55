(function () {
    $.atoms["hello"] = [
        {"type": "input", "attrs": {"name": "Name", "hookable": true, "validation": [{"type": "required"}]}, "tag_code": "name"},
        {
            "type": "select",
            "attrs": {
                "name": "Greeting",
                "hookable": true,
                "remote": true,
                "remote_url": $.context.bk_plugin_api_host["hello"] + "bk_plugin/plugin_api/greetings/",
                "remote_data_init": function (resp) { return resp.greetings.map(function (g) { return {"text": g, "value": g}; }); }
            },
            "tag_code": "greeting"
        },
        {"type": "int", "attrs": {"name": "Times", "hookable": true}, "tag_code": "times"}
    ];
})();

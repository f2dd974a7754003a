"""The Science Platform's server side: instances and scopes, groups, released data, personal workspaces,
portal sessions and the JSON API the portal and `dms.client` use."""

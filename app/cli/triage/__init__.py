"""The field worker's commands: screen a batch, report it, and reach the PACS the studies come from."""

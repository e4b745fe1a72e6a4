# The job's identity: pulls the image and receives messages. Its client id reaches the worker as
# MANAGED_IDENTITY_CLIENT_ID, as in the tutorial.
resource "azurerm_user_assigned_identity" "job" {
  name                = local.names.job_identity
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  tags                = local.tags
}

# The scaler's identity, only when it does not use the connection string.
resource "azurerm_user_assigned_identity" "scaler" {
  count               = local.scaler_uses_identity ? 1 : 0
  name                = local.names.scaler
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  tags                = local.tags
}
